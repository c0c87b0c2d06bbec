"""Benchmark (not a test): the evaluation as AutoAttack's cascade against the flat evaluation, on
two defenders at the main eta, in one run. Per defender and mode it prints the evaluation's
seconds (FGSM-curr, PGD-curr, then the strong attacks), the time of each strong attack and the
worst-case error:

- `flat (old set)`: the strong set of the study before the cascade (APGD-CE, APGD-DLR, Square),
  each on every image;
- `flat`: this study's strong set (eval.strong_attacks: APGD-CE, APGD-T, FAB-T, Square), each on
  every image;
- `cascade`: the same attacks, each on the images nothing before it fooled (the study's way);
  the attacks' draws are keyed by image (attacks/keyed.py), so it fools every image `flat` fools
  (the last line counts any it misses);
- with `--standard`, also the cascade at AutoAttack's standard budget (9 target classes for
  APGD-T and FAB-T, Square at 5,000 queries): what the standard version would cost here;
- with `--restarts R`, also the cascade with R random starts for APGD-CE and APGD-T (each on the
  images the starts before left unfooled): what more restarts cost and find here.

    .venv/bin/python bench/bench_cascade.py [--defenders pgd-at,minimax] [--n 0] [--threads 2]
        [--standard] [--restarts R]

The defenders are the study's trained models (models/<name>.pt, after `make study`); where one
is missing, a SmallCNN trained here stands in (bench_strength.defender: `pgd-at` fine-tuned with
PGD-AT, anything else plain). Settings come from params.yaml. On a shared machine read the
ratios, not the seconds.
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from advgame import config, masks, names
from advgame.attacks.target import Defender
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.evaluation.crosseval import Plan, evaluate_defender


def load(name: str, eta: float, n: int):
    path = Path(names.model_path(name))
    data = Path(names.DATA)
    if path.exists() and (data / "test.pt").exists():
        x, y = load_split(data, "test", n)
        return load_defender(name, str(path), "cpu"), x, y, "the study's"
    from bench_strength import defender
    m, xt, yt = defender("pgd-at" if name == "pgd-at" else "plain", eta)
    xt, yt = (xt[:n], yt[:n]) if n else (xt, yt)
    return Defender(name, m, m), xt, yt, "a bench-trained stand-in for"


def run(d: Defender, x, y, plan: Plan) -> tuple[float, dict]:
    t = time.perf_counter()
    out = evaluate_defender(d, x, y, plan)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defenders", default="pgd-at,minimax")
    ap.add_argument("--n", type=int, default=0, help="first n test images (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--standard", action="store_true", help="also the cascade at AutoAttack's standard budget")
    ap.add_argument("--restarts", type=int, default=0, help="also the cascade with this many APGD restarts")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    p = config.load("params.yaml")
    base = replace(Plan.from_params(p), etas=[p.attack.eta], sanity_eta=0, saturation_n=0)
    modes = {"flat (old set)": replace(base, strong_attacks=["apgd-ce", "apgd-dlr", "square"], cascade=False),
             "flat": replace(base, cascade=False),
             "cascade": base}
    if a.standard:
        modes["cascade, standard"] = replace(base, apgd_targets=9, fab_targets=9, square_queries=5000)
    if a.restarts:
        modes[f"cascade, {a.restarts} restarts"] = replace(base, apgd_restarts=a.restarts)
    key = config.eta_key(p.attack.eta)
    print(f"strong set {base.strong_attacks}, APGD {base.apgd_iters} it, APGD-T {base.apgd_targets} targets, "
          f"FAB-T {base.fab_targets} x {base.fab_iters} it, Square {base.square_queries} queries; eta {key}; "
          f"{a.threads} threads")
    for name in a.defenders.split(","):
        d, x, y, what = load(name, p.attack.eta, a.n)
        print(f"\n== {what} `{name}` on {len(x)} images")
        rows, worst = {}, {}
        for mode, plan in modes.items():
            seconds, out = run(d, x, y, plan)
            rows[mode] = seconds
            worst[mode] = masks.unpack(out["per_image"]["worst-case"][key], len(x))
            strong = {k: v for k, v in out["seconds_by_attack"].items() if k in plan.strong_attacks}
            ran = {k: v["ran_on"] for k, v in out["cascade"].get(key, {}).items()}
            print(f"{mode:>18}: {seconds:7.1f} s, worst-case {out['results']['worst-case'][key]['error']:.3f}; "
                  + ", ".join(f"{k} {v:.1f} s on {ran.get(k, '?')}" for k, v in strong.items()))
        missed = sum(f and not c for f, c in zip(worst["flat"], worst["cascade"]))
        print(f"cascade / flat: {rows['cascade'] / rows['flat']:.2f}x time; "
              f"cascade / flat (old set): {rows['cascade'] / rows['flat (old set)']:.2f}x; "
              f"images the flat run fools and the cascade does not: {missed}")


if __name__ == "__main__":
    main()
