"""Before any stage work: the whole params.yaml is valid and dvc.yaml was generated from it.

Torch-free, so the `check-params` stage (the first of the pipeline; it depends on the whole
params.yaml) costs about a second after any change of params.yaml, and a bad key or a stale
pipeline stops `dvc repro` / `dvc exp run` before any stage does work.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from advgame import UserError, config
from advgame.names import STAMP, STAMP_TEXT  # noqa: F401  (the check stage's output; re-exported)


def check_pipeline_current(params: config.Params, params_path: str = "params.yaml",
                           dvc_yaml: str = "dvc.yaml") -> None:
    """Stop when dvc.yaml was generated from other params: a shape param (catmouse.rounds,
    study.defenders, game.gamma_sweep, table5) changed, e.g. by `dvc exp run -S`, and the stages
    DVC runs would mix the old shape's files into new results. Only where dvc.yaml is the
    generated one (a hand-written one, or none, is the user's own)."""
    from advgame.pipeline import (
        generator as pipeline,  # the generator: imported here only, it imports nothing of ours back
    )

    path = Path(dvc_yaml)
    if not path.exists():
        return
    text = path.read_text()
    if not text.startswith(pipeline.HEADER):
        return
    wanted = pipeline.render(params)
    if text == wanted:
        return
    raise UserError(f"{dvc_yaml} is stale: {params_path} {_shape_change(text, wanted)}; run "
                    "`make pipeline` (python -m advgame.pipeline), commit dvc.yaml, then rerun. "
                    "With `dvc exp run -S`, change params.yaml and run `make pipeline` first instead "
                    "(DVC reads dvc.yaml before it applies -S)")


def _shape_change(have: str, want: str) -> str:
    """Which stages the params add or remove (or that one stage's definition differs)."""
    try:
        old = yaml.safe_load(have).get("stages") or {}
    except (yaml.YAMLError, AttributeError):
        return "does not match it"
    new = yaml.safe_load(want)["stages"]
    added, removed = [s for s in new if s not in old], [s for s in old if s not in new]
    parts = [f"adds stage(s) {', '.join(added[:4])}" + (" ..." if len(added) > 4 else "")] if added else []
    parts += [f"removes stage(s) {', '.join(removed[:4])}" + (" ..." if len(removed) > 4 else "")] if removed else []
    if not parts:
        changed = [s for s in new if new[s] != old.get(s)]
        parts = [f"changes stage {changed[0]}" if changed else "changes the plots"]
    return " and ".join(parts)


def check(params_path: str = "params.yaml", dvc_yaml: str = "dvc.yaml") -> config.Params:
    """Every key at every level (unknown keys included), then dvc.yaml against the params."""
    params = config.load(params_path)
    check_pipeline_current(params, params_path, dvc_yaml)
    return params


def process_start() -> float:
    """This process's start (unix seconds), before Python and the imports; now where unknown."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])  # 10 ms steps; /proc/stat's btime: 1 s
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()
