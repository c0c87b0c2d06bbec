"""Benchmark (not a test): where one defender's evaluation spends its time, per attack, with the
study's eval params, and what the larger-eta carry-over (evaluate.py) saves. Prints seconds per
attack with and without the carry-over and the worst-case error of each (equal or higher with).

    .venv/bin/python bench/bench_eval.py [--model models/pgd-at.pt] [--n 500] [--threads 2]
        [--magnet] [--no-strong]

Without --model it trains a SmallCNN for 2 epochs on 2,000 mnist5k digits (about 10 s);
--magnet puts a reformer (2 epochs) and a 1% detector in front of it (a MagNet-like defender).
On a shared machine read the ratios, not the seconds.
"""
import argparse
import copy
import time

import torch

from advgame.config import TrainParams, load
from advgame.data import load_mnist5k
from advgame.defenses.loading import Defender, load_defender
from advgame.evaluation.crosseval import Plan, evaluate_defender
from advgame.models import SmallCNN
from advgame.training import fit, standard_objective


def tiny(magnet_like: bool):
    (x, y), (xt, yt) = load_mnist5k(0.2, 0)
    torch.manual_seed(0)
    m = SmallCNN()
    fit(m, x[:2000], y[:2000], standard_objective, TrainParams(epochs=2, batch=64, lr=2e-3))
    m.eval()
    if not magnet_like:
        return Defender("tiny", m, m), m, xt, yt
    from advgame.defenses import magnet

    ae = magnet.Reformer(1)
    fit(ae, x[:1000], y[:1000], magnet.denoising_objective(0.1), TrainParams(epochs=2, batch=16, lr=3e-2))
    t = magnet.threshold_for(magnet.recon_errors(ae, x[3000:4000]), 0.01)
    return magnet.build_defender("tiny-magnet", copy.deepcopy(m), ae, t, 1000.0), m, xt, yt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--magnet", action="store_true")
    ap.add_argument("--no-strong", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.model:
        d = load_defender("bench", a.model)
        (_, _), (xt, yt) = load_mnist5k(0.2, 0)
        base = d.classifier
    else:
        d, base, xt, yt = tiny(a.magnet)
    x, y = xt[:a.n], yt[:a.n]
    p = load("params.yaml")
    if a.no_strong:
        p.eval.strong_attacks = []
    rows = {}
    for carry in (True, False):
        plan = Plan.from_params(p, transfer_source=base, carry=carry)
        t = time.perf_counter()
        out = evaluate_defender(d, x, y, plan)
        rows[carry] = (time.perf_counter() - t, out)
    (t1, o1), (t0, o0) = rows[True], rows[False]
    names = sorted(set(o1["seconds_by_attack"]) | set(o0["seconds_by_attack"]))
    print(f"{'attack':24s} {'carry s':>8s} {'fresh s':>8s} {'ratio':>6s}")
    for n in names:
        s1, s0 = o1["seconds_by_attack"].get(n, 0.0), o0["seconds_by_attack"].get(n, 0.0)
        print(f"{n:24s} {s1:8.1f} {s0:8.1f} {s1 / s0 if s0 else float('nan'):6.2f}")
    print(f"{'total':24s} {t1:8.1f} {t0:8.1f} {t1 / t0:6.2f}")
    for label, o in (("carry", o1), ("fresh", o0)):
        wc = {k: c["error"] for k, c in o["results"]["worst-case"].items()}
        print(f"worst-case ({label}): {wc}; sanity {o['sanity_attack']} at 1.0: "
              f"{o['sanity_pgd_large_eta']}")


if __name__ == "__main__":
    main()
