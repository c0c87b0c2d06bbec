"""The game's part of the report: the minimax gamma sweep, the solvers' convergence (defender
loss and attacker objective per epoch for alt, minimax and maximin) and the paper's Table 5 at
every eta. Read from reports/sweep/*.json, reports/game/*.csv, reports/table5/*.json and the
defenders' evaluations; nothing here trains or attacks."""
from __future__ import annotations

import csv
import math
from pathlib import Path

from advgame import config, names
from advgame.artifacts import load_json

SWEEP_ATTACKS = ("clean", "pgd-curr")  # plus attnet-curr:<game attacker arch>


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(fh)]


def load_histories(root: Path) -> dict[str, list[dict]]:
    out = {}
    for mode in ("alt", "minimax", "maximin"):
        f = root / "reports/game" / f"{mode}.csv"
        if f.exists():
            out[mode] = read_history(f)
    return out


def sweep_points(p: config.Params, root: Path, defenders: dict) -> list[dict]:
    """One point per gamma: {"gamma", "source", "penalty_ratio", "<attack>": cell}. gamma = 0 is
    alt and the study's own gamma is the minimax evaluation (same attacks, same images)."""
    arch = p.game.attacker_arch
    attacks = (*SWEEP_ATTACKS, f"attnet-curr:{arch}")
    eta = config.eta_key(p.attack.eta)
    pts = []
    for d, gamma in (("alt", 0.0), ("minimax", p.game.gamma)):
        res = defenders.get(d, {}).get("results", {})
        if res:
            pt = {"gamma": gamma, "source": f"eval-{d}"}
            for a in attacks:
                c = res.get(a, {}).get("0" if a == "clean" else eta)
                if c:
                    pt[a] = c
            pts.append(pt)
    for f in sorted((root / "reports/sweep").glob("*.json")):
        o = load_json(f)
        if o.get("gamma") in p.game.gamma_sweep and o.get("eta") == p.attack.eta:
            pts.append({"gamma": o["gamma"], "source": f.stem,
                        "penalty_ratio": o.get("penalty_ratio_last_epoch"), **o["results"]})
    return sorted(pts, key=lambda q: q["gamma"])


def plot_sweep(pts: list[dict], arch: str, path: Path, plt, save) -> bool:
    """Minimax's clean, PGD-curr and AttNet-curr error against gamma (alt drawn at gamma = 0 on a
    symlog axis)."""
    if len(pts) < 2:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = [q["gamma"] for q in pts]
    for a in (*SWEEP_ATTACKS, f"attnet-curr:{arch}"):
        ys = [q.get(a, {}).get("error", math.nan) for q in pts]
        lo = [q.get(a, {}).get("ci95", [math.nan] * 2)[0] for q in pts]
        hi = [q.get(a, {}).get("ci95", [math.nan] * 2)[1] for q in pts]
        ax.plot(xs, ys, marker="o", label=a)
        ax.fill_between(xs, lo, hi, alpha=0.15)
    positive = [g for g in xs if g > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel("gamma (0 = alt)")
    ax.set_ylabel("test error")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("minimax: error against the look-ahead weight gamma")
    save(fig, path)
    return True


def plot_convergence(hist: dict[str, list[dict]], path: Path, plt, save) -> bool:
    """Defender loss and attacker objective per epoch for the three solvers."""
    if not hist:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for mode, rows in hist.items():
        ep = [r["epoch"] for r in rows]
        axes[0].plot(ep, [r.get("defender_loss", math.nan) for r in rows], marker="o", label=mode)
        axes[1].plot(ep, [r.get("attacker_objective", math.nan) for r in rows], marker="o", label=mode)
    for ax, t in zip(axes, ("defender loss", "attacker objective f")):
        ax.set_title(t)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save(fig, path)
    return True


def table5_cells(root: Path) -> dict[str, dict]:
    """defender -> results of its table5 stage (the etas beyond the main one)."""
    out = {}
    for f in sorted((root / "reports/table5").glob("*.json")):
        o = load_json(f)
        out[o["defender"]] = o["results"]
    return out


def sweep_table(pts: list[dict], arch: str, fmt) -> tuple[list[str], list[list[str]]]:
    header = ["gamma", "from", "penalty / f (last epoch)", "clean", "PGD-curr", f"AttNet-curr ({arch})"]
    body = []
    for q in pts:
        r = q.get("penalty_ratio")
        body.append([f"{q['gamma']:g}", f"`{q['source']}`", "n/a" if r is None else f"{r:.3g}",
                     fmt(q.get("clean")), fmt(q.get("pgd-curr")), fmt(q.get(f"attnet-curr:{arch}"))])
    return header, body


def attacker_rows(root: Path, defenders: list[str]) -> tuple[list[str], list[list[str]]]:
    """Per defender and attacker architecture, from the attackers stages' reports: AttNet-curr
    test error on the whole test split, the perturbation's std across images (image dependence:
    ~0.06 was the old universal pattern) and the saturated fraction, and the epochs trained."""
    header = ["defender", "arch", "test error (all test images)", "pert std across images",
              "saturated", "epochs"]
    body = []
    for d in defenders:
        f = root / names.stage_report(f"attackers-{d}")
        if not f.exists():
            continue
        st = load_json(f)
        for arch in ("mlp", "conv", "unet"):
            k = f"attnet_{arch}"
            if f"{k}_test_error" in st:
                body.append([f"`{d}`", arch, f"{st[f'{k}_test_error']:.3f}",
                             f"{st.get(f'{k}_pert_std', math.nan):.3f}",
                             f"{st.get(f'{k}_saturated', math.nan):.3f}", str(st.get(f"{k}_epochs", "n/a"))])
    return header, body
