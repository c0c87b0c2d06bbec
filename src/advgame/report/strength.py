"""The attack-strength curves of the detector defenders (stages strength-<defender>, issue 31):
pgd-adaptive's error against its PGD steps and guided starts, each setting from scratch, read
from reports/strength/*.json; a table and a line on saturation per defender, and one figure."""
from __future__ import annotations

from pathlib import Path

from advgame.artifacts import load_json
from advgame.names import STRENGTH

LABELS = {"magnet": "MagNet"}


def load_strength(root: Path) -> dict[str, dict]:
    """defender -> its strength file's object."""
    return {(o := load_json(f))["defender"]: o for f in sorted((Path(root) / STRENGTH).glob("*.json"))}


def _table(o: dict) -> list[str]:
    steps = sorted({r["steps"] for r in o["grid"]})
    starts = sorted({r["starts"] for r in o["grid"]})
    at = {(r["steps"], r["starts"]): r for r in o["grid"]}
    head = "| steps \\ guided starts | " + " | ".join(str(k) for k in starts) + " |"
    out = [head, "|" + "---|" * (len(starts) + 1)]
    for s in steps:
        out.append(f"| {s} | " + " | ".join(f"{at[(s, k)]['error']:.3f}" if (s, k) in at else "n/a"
                                           for k in starts) + " |")
    return out


def verdict(o: dict) -> str:
    """Where the curve saturates, or that it does not, with the numbers."""
    rows = o["grid"]
    most = max(r["starts"] for r in rows)
    at = sorted((r for r in rows if r["starts"] == most), key=lambda r: r["steps"])
    top, u = at[-1], o["union"]["error"]
    half = next((r for r in at if 2 * r["steps"] == top["steps"]), None)
    doubling = (f"; {half['steps']} -> {top['steps']} steps at {most} starts: "
                f"{half['error']:.3f} -> {top['error']:.3f}") if half else ""
    if o["saturated"]:
        return (f"Saturated: the largest setting ({top['steps']} steps, {most} guided starts) reaches "
                f"{top['error']:.3f}, within 0.005 of the union over the grid ({u:.3f}){doubling}.")
    return (f"Not saturated: the largest setting ({top['steps']} steps, {most} guided starts) reaches "
            f"{top['error']:.3f} against {u:.3f} for the union over the grid{doubling}; a stronger "
            "attack may find more.")


def strength_section(curves: dict[str, dict]) -> list[str]:
    """Section 2's subsection per defender with a strength curve."""
    md: list[str] = []
    for d, o in curves.items():
        ev = o.get("settings", {}).get("eval_setting", {})
        md += [f"### {LABELS.get(d, d)}: attack strength (`pgd-adaptive` at eta {o['eta']:g}, {o['n']} test images)", "",
               "Error (misclassified and accepted, or a clean error) of `pgd-adaptive` with each number of "
               "PGD steps and of guided starts (0 = the random start only), every setting run from scratch "
               f"(no carry from smaller etas){'; the evaluation uses ' + str(ev.get('steps')) + ' steps and ' + str(ev.get('starts')) + ' starts' if ev else ''}. "
               f"Union over the grid: {o['union']['error']:.3f}.", "",
               *_table(o), "", verdict(o), ""]
    return md


def plot_strength(curves: dict[str, dict], path: Path, plt, save) -> bool:
    """Error against PGD steps, one line per number of guided starts (one panel per defender)."""
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (d, o) in zip(axes[0], curves.items()):
        for k in sorted({r["starts"] for r in o["grid"]}):
            pts = sorted((r["steps"], r["error"]) for r in o["grid"] if r["starts"] == k)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{k} guided starts")
        ax.axhline(o["union"]["error"], color="gray", ls="--", lw=1, label="union over the grid")
        ax.set_xscale("log", base=2)
        steps = sorted({r["steps"] for r in o["grid"]})
        ax.set_xticks(steps, [str(v) for v in steps])  # the grid's own steps, not powers of 2
        ax.minorticks_off()
        ax.set_xlabel("PGD steps")
        ax.set_ylabel("error")
        ax.set_title(f"{LABELS.get(d, d)}: pgd-adaptive at eta {o['eta']:g}")
        ax.legend(fontsize=7)
    save(fig, path)
    return True
