"""Benchmark (not a test): the same tiny pipeline built cold (`dvc repro`) and warm (`advgame warm --
dvc repro`, stages forked from a server with torch and MLflow imported), tracking on as in the
study, each in its own temporary repository. Prints, per build, the wall time of `dvc repro` and,
from the stages' own clocks (pipeline/cost.py, the cost table's columns), the sum of the stage
bodies and the median overhead per stage split into before / start-up / closing; then the ratio,
and whether every output is byte-identical between the two builds (it must be).

    .venv/bin/python bench/bench_warm.py

Short stages on purpose: their overhead is what a stage pays whatever its work. On a shared
machine read the ratios, not the seconds.
"""
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from advgame import config
from advgame.pipeline import cost, warm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMALL = {"study": {"defenders": ["baseline", "catmouse", "minimax"]}, "run": {"threads": 1},
         "data": {"train_n": 200, "val_n": 100}, "baseline": {"epochs": 1},
         "eval": {"etas": [0.3], "n_test": 50, "n_main": 50, "pgd_steps": 3, "apgd_iters": 3, "fab_iters": 3,
                  "fab_targets": 1, "square_queries": 5, "saturation_n": 10},
         "catmouse": {"rounds": 3, "epochs": 1, "matrix_rounds": [0, 3]}, "attacker": {"archs": ["mlp"], "epochs": 1},
         "game": {"epochs": 1, "gamma_sweep": []}, "table5": {"etas": []}, "ablation": {"variants": []},
         "art": {"attacks": [], "n_test": 20}, "report": {"examples": 1}}


def project(d: Path, env: dict) -> None:
    for sub in ("stages", "src"):
        shutil.copytree(ROOT / sub, d / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / ".gitignore", d / ".gitignore")
    (d / "params.yaml").write_text(yaml.safe_dump(config.parse(SMALL).model_dump(), sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], [sys.executable, "-m", "advgame.pipeline"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)


def build(d: Path, w: warm.Warm | None) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ADVGAME_TRACKING": "on",
           "MLFLOW_TRACKING_URI": f"sqlite:///{d}/mlflow.db", "PYTHONPATH": str(d / "src"), "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    env.pop("ADVGAME_PIPELINE_ID", None)
    project(d, env)
    t = time.perf_counter()
    subprocess.run(["dvc", "repro"], cwd=d, env=w.env(env) if w else env, check=True, capture_output=True)
    wall = time.perf_counter() - t
    rows = cost.table(cost.timings(d), {})["stages"]

    def median(k):
        return statistics.median(r[k] for r in rows.values() if r[k] is not None)

    return {"repro_s": wall, "stages": len(rows), "body_s": sum(r["body_s"] for r in rows.values()),
            **{k: median(k) for k in ("overhead_s", "before_s", "startup_s", "closing_s")}}


def digests(d: Path) -> dict[str, str]:
    return {str(f.relative_to(d)): hashlib.sha256(f.read_bytes()).hexdigest()
            for sub in ("data", "models", "reports") for f in sorted((d / sub).rglob("*"))
            if f.is_file() and "timing" not in f.relative_to(d).parts}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cold = build(Path(tmp) / "cold", None)
        with warm.server(python=sys.executable) as w:
            hot = build(Path(tmp) / "warm", w)
        print(f"{'':8}{'dvc repro':>11}{'stages':>8}{'bodies':>9}  median overhead a stage (before / start-up / closing)")
        for name, r in (("cold", cold), ("warm", hot)):
            print(f"{name:8}{r['repro_s']:10.1f}s{r['stages']:8}{r['body_s']:8.1f}s  {r['overhead_s']:.2f}s "
                  f"({r['before_s']:.2f} / {r['startup_s']:.2f} / {r['closing_s']:.2f})")
        print(f"warm / cold: dvc repro {hot['repro_s'] / cold['repro_s']:.2f}x, bodies {hot['body_s'] / cold['body_s']:.2f}x, "
              f"median overhead {hot['overhead_s'] / cold['overhead_s']:.2f}x (the server's start, {w.seconds:.1f}s, "
              "not in these)")
        a, b = digests(Path(tmp) / "cold"), digests(Path(tmp) / "warm")
        same = [f for f in a if b.get(f) == a[f]]
        print(f"outputs byte-identical cold and warm: {len(same)} of {len(a)} files")
        for f in sorted(set(a) ^ set(b) | set(a) - set(same)):
            print(f"  differs: {f} {differing_keys(Path(tmp), f)}")


def differing_keys(tmp: Path, f: str) -> str:
    """For a JSON file, the top-level keys that differ (results.json names its repository's commit,
    and the two repositories' commits differ); else ''."""
    import json

    try:
        a, b = (json.loads((tmp / side / f).read_text()) for side in ("cold", "warm"))
    except (OSError, ValueError):
        return ""
    return "(keys: " + ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)) + ")"


if __name__ == "__main__":
    main()
