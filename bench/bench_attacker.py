"""Benchmark (not a test): AttNet-curr against the baseline, per arch; prints the per-epoch
held-out success, perturbation std, saturation and seconds, then the test error.

    PYTHONPATH=src ADVGAME_TRACKING=off python bench/bench_attacker.py [--threads 2] [--archs mlp conv]
    [--set key=value ...]  (overrides of the params.yaml `attacker:` section, e.g. lr=0.003)
"""
import argparse
import time

import torch
import yaml

from advgame.attacks.attnet import attnet
from advgame.attacks.attnet_training import diagnostics, train_attacker
from advgame.config import AttackerParams
from advgame.data import load_split
from advgame.defenses.loading import load_defender

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--archs", nargs="*", default=None)
ap.add_argument("--eta", type=float, default=0.3)
ap.add_argument("--set", nargs="*", default=[])
a = ap.parse_args()
torch.set_num_threads(a.threads)
raw = yaml.safe_load(open("params.yaml"))["attacker"]
raw.update({k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)})
cfg = AttackerParams(**raw)
print(f"threads {a.threads}  eta {a.eta}  {cfg.model_dump()}")
d = load_defender("baseline", "models/baseline.pt")
x, y = load_split("data/prepared", "train")
val = load_split("data/prepared", "val")
xt, yt = load_split("data/prepared", "test")


def errors(xa, ya):
    return d.errors(xa, ya, clean=False)


print(f"clean test error {float(d.errors(xt, yt, clean=True).float().mean()):.3f}")
rows = []
for arch in a.archs or cfg.archs:
    t = time.perf_counter()
    att, hist = train_attacker(d.model, d.attack_loss, x, y, arch, cfg, a.eta, x.shape[1:], errors=errors, val=val)
    sec = time.perf_counter() - t
    for i, m in enumerate(hist):
        print(f"  {arch} epoch {i + 1}: validation success {m['val']:.3f}  "
              f"pert std {m['pert_std']:.3f}  saturated {m['saturated']:.3f}  |h| {m['mean_abs_h']:.2f}  "
              f"{m['seconds']:.1f} s")
    err = float(errors(attnet(att, xt, a.eta), yt).float().mean())
    dg = diagnostics(att, xt, a.eta)
    rows.append((arch, len(hist), sec, err, dg["pert_std"], dg["saturated"]))
    print(f"{arch}: test error {err:.3f}  ({len(hist)} epochs, {sec:.1f} s)", flush=True)
print("\n| arch | epochs | seconds | test error | pert std | saturated |\n|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} |")
