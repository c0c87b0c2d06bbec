"""Benchmark (not a test): wall time of one training epoch of standard training, fgsm-at and
sens-fgsm with SmallCNN on the mnist5k training set, median over repeats, and the ratio to a
standard epoch.

    .venv/bin/python bench/bench_fgsm_training.py [--repeats 3] [--batches 0] [--threads 0]

--batches N times the first N minibatches only and scales the time to a full epoch. The
methods are interleaved within each repeat so that load from other processes hits them alike.
"""
import argparse
import math
import statistics
import time

import torch

from advgame.config import TrainParams
from advgame.data import load_mnist5k
from advgame.defenses.fgsm_training import fgsm_at_objective, sens_fgsm_objective
from advgame.models import SmallCNN
from advgame.training import make_optimizer, minibatches, standard_objective


def epoch_seconds(objective, x, y, cfg: TrainParams, batches: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one epoch; CPU time is the fairer figure on a shared machine."""
    torch.manual_seed(0)
    model = SmallCNN().train()
    opt = make_optimizer(cfg, model.parameters())
    nb = math.ceil(len(x) / cfg.batch)
    n = min(batches or nb, nb)
    it = minibatches(x, y, cfg.batch, torch.Generator().manual_seed(0))
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        xb, yb = next(it)
        loss = objective(model, xb, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    scale = nb / n
    return (time.perf_counter() - start) * scale, (time.process_time() - cpu) * scale


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, default=0, help="minibatches per measurement; 0 = a full epoch")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    ap.add_argument("--eta", type=float, default=0.3)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (x, y), _ = load_mnist5k(0.2, 0)
    cfg = TrainParams(batch=args.batch)
    methods = {"standard": standard_objective,
               "fgsm-at": fgsm_at_objective(args.eta, 0.5),
               "sens-fgsm": sens_fgsm_objective(args.eta, 0.5, args.tau)}
    epoch_seconds(standard_objective, x, y, cfg, 2)  # warm-up: first-call allocations
    times = {m: [] for m in methods}
    for _ in range(args.repeats):
        for m, objective in methods.items():
            times[m].append(epoch_seconds(objective, x, y, cfg, args.batches))
    print(f"SmallCNN, {len(x)} training images, batch {cfg.batch}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}, seconds per epoch")
    for i, what in enumerate(("wall", "CPU")):
        base = statistics.median(t[i] for t in times["standard"])
        for m, ts in times.items():
            med = statistics.median(t[i] for t in ts)
            runs = ", ".join(f"{t[i]:.2f}" for t in ts)
            print(f"{what:4s} {m:10s} {med:7.2f} s  x{med / base:4.2f}   runs: {runs}")


if __name__ == "__main__":
    main()
