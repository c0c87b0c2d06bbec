"""One hash per stage script of the code it runs, for DVC: the `code` stage writes them to
codehash.json and every other stage declares its script's hash as a param.

    python -m advgame.pipeline.codehash     # the `code` stage: write codehash.json

A stage's code is its script and every advgame module the script runs, transitively
(pipeline.codedeps, read with ast: nothing is imported), less the modules that only log, track or
measure (NOT_DEPS): editing a module reruns exactly the stages whose script runs it. The `code`
stage depends on every source file, so DVC reruns it (in about a second) after any edit, and the
stages whose hash changed after it.

Why not each stage's source files as its own deps: the 59-stage study then declared 1,449 of
them, and DVC rereads and rewrites all of dvc.lock (10,286 lines, 287 KB then; half of it those
deps) after every stage it runs. One param per stage halves dvc.lock and the seconds DVC spends
between stages (docs/results.md, "Cost").
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from advgame.pipeline import codedeps

PKG = Path(__file__).resolve().parents[1]  # src/advgame
ROOT = PKG.parents[1]
FILE = "codehash.json"
SCRIPTS = "stages"
# modules whose edits must not rerun the science: output, tracking, cost measurement and the
# generator (which check-params alone depends on: it checks dvc.yaml against it)
NOT_DEPS = {"pipeline", "pipeline.tracking", "pipeline.store", "pipeline.mlflow_registry", "progress", "pipeline.server",
            "pipeline.generator", "pipeline.dvc_plots", "pipeline.codedeps", "pipeline.codehash",
            "pipeline.summary", "pipeline.cost", "passes"}
GENERATOR = ["src/advgame/pipeline/generator.py", "src/advgame/pipeline/dvc_plots.py"]
EXTRA = {"check_params": GENERATOR}  # script stem -> files it depends on beyond its imports


def sources(root: Path = ROOT) -> list[str]:
    """Every file a stage's code can come from: the package's modules and the stage scripts (the
    `code` stage's deps)."""
    files = [*(root / "src/advgame").rglob("*.py"), *(root / SCRIPTS).glob("*.py")]
    return sorted(str(f.relative_to(root)) for f in files if "__pycache__" not in f.parts)


def files(script: str, root: Path = ROOT) -> list[str]:
    """The script plus every advgame module it runs (transitively), less NOT_DEPS and what only they
    import (the generator's imports are check_params' code, through EXTRA, not every stage's)."""
    pkg, extra = root / "src/advgame", EXTRA.get(Path(script).stem, ())
    mods = set().union(*(codedeps.closure(root / f, pkg, stop=NOT_DEPS)
                         for f in [script, *extra] if (root / f).exists()))
    found = {str(codedeps.module_file(m, pkg).relative_to(root)) for m in mods - NOT_DEPS}
    return [script, *sorted(found | set(extra))]


def key(script: str) -> str:
    """The param a stage running `script` declares in FILE: '<stem>.hash'."""
    return f"{Path(script).stem}.hash"


def table(root: Path = ROOT) -> dict[str, dict]:
    """stem -> {hash: sha256 (16 hex) of every file's path and bytes, files: the files}."""
    out = {}
    for script in sorted((root / SCRIPTS).glob("*.py")):
        fs = files(str(script.relative_to(root)), root)
        h = hashlib.sha256()
        for f in fs:
            h.update(f.encode() + b"\0" + (root / f).read_bytes() + b"\0")
        out[script.stem] = {"hash": h.hexdigest()[:16], "files": fs}
    return out


def main(root: Path = ROOT) -> int:
    out = root / FILE
    text = json.dumps(table(root), indent=1) + "\n"
    if not out.exists() or out.read_text() != text:
        out.write_text(text)
    print(f"code: {FILE} ({len(json.loads(text))} stage scripts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(Path.cwd()))
