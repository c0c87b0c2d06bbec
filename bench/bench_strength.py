"""Benchmark (not a test): is our strong set (PGD, APGD-CE, APGD-DLR, APGD-T, Square) weaker than
ART's AutoAttack-style attacks (APGD-CE, APGD-DLR, Square; a library we did not write), per
defender type, and what does each attack add to the worst case for its cost? Prints per attack
its error, seconds, and the images it fools that no other of our attacks does; then the union of
our default set, with and without APGD-T, against ART's union.

    .venv/bin/python bench/bench_strength.py [--kind pgd-at|trades|fgsm-rs|plain] [--n 200]
        [--eta 0.3] [--threads 2] [--apgd-iters 100] [--square-queries 1000]

The defender is a SmallCNN trained 2 epochs on 2,000 mnist5k digits, then (unless plain)
fine-tuned one epoch with the named objective: small and quick, the shape of the study's
defenders, not their numbers. On a shared machine read the ratios, not the seconds.
"""
import argparse
import time

import torch

from advgame.attacks.apgd import apgd, apgd_t
from advgame.attacks.art import art_attack
from advgame.attacks.pgd import pgd
from advgame.attacks.square import square
from advgame.config import TrainParams
from advgame.data import load_mnist5k
from advgame.models import SmallCNN, predict
from advgame.training import fit, standard_objective


def defender(kind: str, eta: float):
    from advgame.defenses import field

    (x, y), (xt, yt) = load_mnist5k(0.2, 0)
    torch.manual_seed(0)
    m = SmallCNN()
    fit(m, x[:2000], y[:2000], standard_objective, TrainParams(epochs=2, batch=64, lr=2e-3))
    objective = {"pgd-at": lambda: field.pgd_at_objective(eta, 5, 2.5),
                 "trades": lambda: field.trades_objective(eta, 5, 2.5, 6.0),
                 "fgsm-rs": lambda: field.fgsm_rs_objective(eta, 1.25)}.get(kind)
    if objective is not None:
        fit(m, x[:2000], y[:2000], objective(), TrainParams(epochs=1, batch=64, lr=1e-3))
    return m.eval(), xt, yt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kind", default="pgd-at", choices=["pgd-at", "trades", "fgsm-rs", "plain"])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--eta", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--apgd-iters", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, xt, yt = defender(a.kind, a.eta)
    x, y, eta, it = xt[:a.n], yt[:a.n], a.eta, a.apgd_iters
    runs = {
        "pgd-curr": lambda: pgd(m, x, y, eta, steps=40, batch=500),
        "apgd-ce": lambda: apgd(m, x, y, eta, it, "ce", batch=500),
        "apgd-dlr": lambda: apgd(m, x, y, eta, it, "dlr", batch=500),
        "apgd-t": lambda: apgd_t(m, x, y, eta, it, 3, batch=500),
        "square": lambda: square(m, x, y, eta, a.square_queries, batch=500),
        "art:apgd-ce": lambda: art_attack("apgd-ce", m, x, y, eta, 10, it, batch=500),
        "art:apgd-dlr": lambda: art_attack("apgd-dlr", m, x, y, eta, 10, it, batch=500),
        "art:square": lambda: art_attack("square", m, x, y, eta, 10, square_queries=a.square_queries, batch=500),
    }
    masks, secs = {}, {}
    for name, run in runs.items():
        t = time.perf_counter()
        xa = run()
        secs[name] = time.perf_counter() - t
        masks[name] = predict(m, xa) != y
    ours = [k for k in masks if not k.startswith("art:")]
    print(f"{a.kind}: {a.n} images, eta {eta}, clean error {(predict(m, x) != y).float().mean():.3f}")
    print(f"{'attack':14s} {'error':>6s} {'seconds':>8s} {'only it':>7s}")
    for k, v in masks.items():
        others = [masks[o] for o in ours if o != k]
        alone = int((v & ~torch.stack(others).any(0)).sum()) if k in ours else 0
        print(f"{k:14s} {v.float().mean():6.3f} {secs[k]:8.1f} {alone if k in ours else '':>7}")

    def union(names):
        return torch.stack([masks[k] for k in names]).any(0)

    default = ["pgd-curr", "apgd-ce", "apgd-dlr", "square"]
    art = union(["art:apgd-ce", "art:apgd-dlr", "art:square"])
    for label, names in (("ours (default)", default), ("ours + apgd-t", default + ["apgd-t"])):
        u = union(names)
        print(f"{label:16s} worst-case {u.float().mean():.3f}; ART's union {art.float().mean():.3f}; "
              f"ART fools {int((art & ~u).sum())} images ours does not, ours {int((u & ~art).sum())} ART's not; "
              f"{sum(secs[k] for k in names):.1f} s")


if __name__ == "__main__":
    main()
