"""Training to convergence, as the report shows it: every trained model's record (epochs run, the
cap, the best-validation epoch, its validation value and whether the cap stopped it), read from
the stages that trained it; results.json's `training`, the report's table and list of models at
their cap, one CSV per validation curve for `dvc plots` and one figure of every curve.

A record is what training.training_record returns: {"criterion", "epochs", "cap", "best_epoch",
"capped", "val", "curve"}. The criterion of each kind of model is advgame.defenses.validation's.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from advgame import config, names
from advgame.artifacts import atomic_path, load_json
from advgame.defenses.validation import FOOLING
from advgame.report.tables import md_table

# the figure's panels: a model goes to the first whose test its name passes
GROUPS = (
    ("baseline and cat-and-mouse rounds", lambda m: m == "baseline" or m.startswith("round-")),
    ("attacker networks", lambda m: m.startswith(("attnet:", "attnet-paper:"))),
    ("game defenders (no early stop)", lambda m: m in ("alt", "minimax", "maximin") or m.startswith("sweep-")),
    ("MagNet's reformer", lambda m: m == "magnet"),
    ("robust training", lambda m: True),
)
# why a model may stop at its cap by design (the report says so instead of listing it bare)
BY_DESIGN = {"game defenders (no early stop)": "the game has no early stop: its co-trained attacker "
             "moves, so every epoch runs (the exploitability judges its end, docs/protocol.md section 7)"}


def load_training(p: config.Params, root: Path, stage_reports: list[Path], ablations: dict) -> dict:
    """model -> its record, from every stage report (dvc.yaml's order), the ablations, the gamma
    sweep and the table5 stages of the current params."""
    out: dict[str, dict] = {}
    sources = [load_json(f) for f in stage_reports]
    sources += list(ablations.values())
    sources += [load_json(f) for g in p.game.gamma_sweep if g != p.game.gamma
                if (f := root / names.sweep_path(names.sweep_name(g))).exists()]
    sources += [load_json(f) for d in p.table5.defenders if (f := root / names.table5_path(d)).exists()]
    for src in sources:
        out.update(src.get("training") or {})
    return out


def last_gain(record: dict) -> float | None:
    """How much the last epoch improved the validation criterion (positive: still improving when
    the cap stopped it; a fooling rate improves upwards, every other criterion downwards)."""
    c = record.get("curve") or []
    if len(c) < 2:
        return None
    return (c[-1] - c[-2]) * (1 if record["criterion"] == FOOLING else -1)


def _capped_item(model: str, record: dict) -> str:
    g = last_gain(record)
    if g is None:
        return f"`{model}`"
    trend = "still improving" if g > 0 else "past its best" if g < 0 else "flat"
    return f"`{model}` ({g:+.3f} in epoch {record['epochs']}: {trend})"


def group_of(model: str) -> str:
    return next(title for title, test in GROUPS if test(model))


def results_entries(records: dict) -> dict:
    """results.json's `training`: every record without its curve (the curves are plot data)."""
    return {m: {k: v for k, v in r.items() if k != "curve"} for m, r in records.items()}


def curve_file(model: str) -> str:
    """A model's curve file name: its name with every character outside [A-Za-z0-9._-] as '_'."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".csv"


def write_curves(records: dict, folder: Path) -> None:
    """One CSV per model (epoch, val) in `folder`, the `dvc plots` data (names.PLOT_DATA);
    files of models no longer trained are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = {curve_file(m) for m in records}
    for f in folder.glob("*.csv"):
        if f.name not in keep:
            f.unlink()
    for m, r in records.items():
        with atomic_path(folder / curve_file(m)) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["epoch", "val"])
            w.writerows([i + 1, v] for i, v in enumerate(r.get("curve", [])))


def section(records: dict) -> list[str]:
    """The report's training table and its list of models at their cap."""
    if not records:
        return ["_no training records: no trained model reported one_", ""]
    body = [[f"`{m}`", r["criterion"], f"{r['epochs']} / {r['cap']}", str(r["best_epoch"]),
             "n/a" if r["val"] is None else f"{r['val']:.3f}", "yes" if r["capped"] else "no"]
            for m, r in records.items()]
    capped = [m for m, r in records.items() if r["capped"]]
    md = [md_table(["model", "validation criterion", "epochs / cap", "best epoch", "best validation",
                    "stopped by the cap"], body), ""]
    if not capped:
        return md + ["No model stopped at its epoch cap: every one stopped on its validation plateau.", ""]
    md += [f"**{len(capped)} of {len(records)} models stopped at their epoch cap**, not on a validation "
           "plateau: their numbers are a training budget's, not a converged model's.", ""]
    by_group: dict[str, list[str]] = {}
    for m in capped:
        by_group.setdefault(group_of(m), []).append(m)
    for g, ms in by_group.items():
        if g in BY_DESIGN:
            md.append(f"- {g} ({len(ms)}): {', '.join(f'`{m}`' for m in ms)}: {BY_DESIGN[g]}")
        else:
            md.append(f"- {g} ({len(ms)}; the last epoch's change of the criterion, + = better): "
                      + ", ".join(_capped_item(m, records[m]) for m in ms))
    return md + [""]


def plot_training(records: dict, path: Path, plt, save) -> bool:
    """Every model's validation curve, one panel per group, its best epoch marked (a ring: the
    model kept; a cross at the end of a curve the cap stopped)."""
    groups = [(g, [(m, r) for m, r in records.items() if group_of(m) == g and r.get("curve")])
              for g, _ in GROUPS]
    groups = [(g, ms) for g, ms in groups if ms]
    if not groups:
        return False
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, (g, ms) in zip(axes[0], groups):
        for m, r in ms:
            xs = range(1, len(r["curve"]) + 1)
            (line,) = ax.plot(xs, r["curve"], marker=".", lw=1, label=m if len(ms) <= 12 else None)
            b = r["best_epoch"]
            ax.plot([b], [r["curve"][b - 1]], "o", mfc="none", color=line.get_color(), ms=8)
            if r["capped"]:
                ax.plot([len(r["curve"])], [r["curve"][-1]], "x", color=line.get_color(), ms=7)
        crit = sorted({r["criterion"] for _, r in ms})
        ax.set_title(g, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("; ".join(crit), fontsize=8)
        if len(ms) <= 12:
            ax.legend(fontsize=6)
    fig.suptitle("Validation curves: ring = best epoch (kept), cross = stopped by the epoch cap", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True
