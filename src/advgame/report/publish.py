"""The report's inputs, published for git (stage `publish`). The stages that train and evaluate
write their results to DVC's cache (so that DVC's run cache can restore them); the report reads
them only through this folder: a copy, under the same relative paths, of every file of the
publish stage's dependencies under reports/ (the evaluations under names.RUNS, every stage's
report, the game curves, the gamma sweep, Table 5's further etas, the transfer matrix, the
strength curves) and the data's meta.json, with the adversarial-examples figure drawn from the
models (the one part of the report that needs them). So the report stage depends only on files
git holds, and a clone without DVC's cache can rerun it (`dvc repro --single-item report`:
after `advgame seeds collect`, or a change of report code)."""
from __future__ import annotations

import shutil
from pathlib import Path

from advgame import config, names

INPUTS = "reports/inputs"
EXAMPLES = "figures/examples.png"   # under INPUTS: the examples figure (report/figures.py)


def copied(deps: list[str]) -> list[str]:
    """The dependencies the report reads as files: everything under reports/ and the data's meta
    (the models and the test split only draw the examples figure)."""
    return [d for d in deps if d.startswith("reports/") or d == f"{names.DATA}/meta.json"]


def publish(p: config.Params, deps: list[str], root: str | Path = ".", out: str | Path = INPUTS,
            device="cpu") -> dict:
    """Copy `copied(deps)` (files or folders) from root into `out`, keeping their relative paths,
    and draw the examples figure there from root's models (report/figures.py); `out` is built
    whole beside itself and swapped in, so no file of an earlier run stays. Returns the counts."""
    from advgame.report.figures import load_examples, plot_examples

    root, out = Path(root), Path(root) / out
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = 0
    for d in copied(deps):
        src = root / d
        for f in sorted(f for f in src.rglob("*") if f.is_file()) if src.is_dir() else [src]:
            dst = tmp / f.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
            n += 1
    ex = load_examples(p, root, device)
    drawn = ex is not None and plot_examples(ex[0], ex[1], tmp / EXAMPLES)
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return {"published": n, "examples": bool(drawn)}
