"""What every stage script shares: load and validate params, pick the device, seed, open the
MLflow run, time the work, write the stage report (names.stage_report) and its timing
(names.timing_path), and turn a UserError into one line on stderr and exit code 2 (no traceback,
no half-written outputs).

The stage report is an output (committed): the stage's final numbers, device and host, nothing
that changes between two runs of the same inputs. Its timings (`seconds`, and every `seconds_*` /
`*_seconds` key the body returns) go to MLflow and to names.timing_path(stage), a file git and
DVC do not track, so that a rerun that changes no result leaves `git status` clean.

A stage script is then a few lines:

    from advgame.pipeline.stage import run_stage

    def body(ctx):
        ...            # ctx.params, ctx.device, ctx.log(metrics, step), ctx.tracker
        return {"clean_error": 0.01}   # final metrics for the stage report

    if __name__ == "__main__":
        run_stage("baseline", body, sections=["run", "data", "baseline"])

Its paths come from its command line, which the generator writes into dvc.yaml
(`python stages/baseline.py --data DIR --out MODEL`): the inputs named
there are what the run's input hash covers.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from advgame import UserError, artifacts, config, passes
from advgame.artifacts import save_json
from advgame.names import DATA, stage_report, timing_path
from advgame.pipeline import preflight, tracking
from advgame.runtime import compute_env, resolve_device, seed_all, setup_torch


def hash_inputs(deps: list[str], params: dict) -> str:
    """sha256 over the declared dependency files (sorted, recursively) and the params used."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for dep in sorted(deps):
        p = Path(dep)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.exists():
                h.update(str(f).encode())
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
    return h.hexdigest()[:16]


def input_paths(argv: list[str]) -> list[str]:
    """The input files and folders a stage's command line names: the values of its `--x` options
    (comma lists split) that exist, except outputs (`--out...`)."""
    found, opt = [], None
    for tok in argv:
        if tok.startswith("--"):
            opt, _, value = tok.partition("=")
            if not value:
                continue
        else:
            value = tok
        if opt and not opt.startswith("--out"):
            found += [v.split("=")[-1] for v in value.split(",") if v and Path(v.split("=")[-1]).exists()]
        opt = None
    return found


@dataclass
class StageContext:
    name: str
    params: config.Params
    device: torch.device
    tracker: tracking.Tracker
    history: list = field(default_factory=list)

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Per-epoch (step) or final metrics, to MLflow."""
        self.tracker.log_metrics(metrics, step)


def is_timing(key: str) -> bool:
    """A wall-clock figure of a stage report's: `seconds`, `seconds_<part>` or `<part>_seconds`."""
    return key == "seconds" or key.startswith("seconds_") or key.endswith("_seconds")


def stage_report_path(name: str) -> Path:
    return Path(stage_report(name))


def run_stage(name: str, body: Callable[[StageContext], dict | None], sections: list[str],
              deps: list[str] | None = None, params_path: str = "params.yaml") -> None:
    """Run a stage's body; `deps` (the input hash's files) default to the inputs on the command line."""
    start, clock = time.perf_counter(), {"process": preflight.process_start(), "start": time.time()}
    tracker = None
    try:
        params = preflight.check(params_path)  # every key, and dvc.yaml generated from them
        used = {s: getattr(params, s).model_dump() for s in sections}
        setup_torch(params.run.threads)
        device = resolve_device(params.run.device)
        seed_all(params.run.seed)
        env = compute_env(device)
        inputs = input_paths(sys.argv[1:]) if deps is None else list(deps)
        tags = {"advgame.input_hash": hash_inputs(inputs, used),
                "advgame.git_commit": tracking.git_commit(),
                **{f"advgame.{k}": str(v) for k, v in env.items()}}
        tracker = tracking.Tracker(name, used, tags, all_params=params.model_dump(), background=True)
        ctx = StageContext(name, params, device, tracker)
        clock["work"] = time.time()
        with passes.counting() as counter:
            final = body(ctx) or {}
        clock["done"] = time.time()
        seconds = round(time.perf_counter() - start, 2)
        timing = {**{k: v for k, v in final.items() if is_timing(k)}, "seconds": seconds}
        final = {k: v for k, v in final.items() if not is_timing(k)}
        if name == "prepare" or any(str(d).startswith(DATA) for d in inputs):  # after prepare wrote it
            tracker.log_dataset(Path(DATA) / "meta.json", "output" if name == "prepare" else "input")
        tracker.log_metrics({**final, **timing, **training_metrics(final.get("training", {}))})
        save_json({"stage": name, "device": str(device), **final, "env": env}, stage_report_path(name))
        clock["ended"] = time.time()
        save_json({"stage": name, **timing, "clock": clock, "passes": counter.snapshot()}, timing_path(name))
        tracker.finish(ok=True)
        summary = _summary(final)
        print(f"{name}: done in {seconds:.1f}s" + (f" ({summary})" if summary else ""))
    except UserError as e:
        if tracker is not None:
            tracker.finish(ok=False)
        print(f"error [{name}]: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as e:
        if tracker is not None:
            tracker.finish(ok=False)
        if e.errno not in artifacts.UNWRITABLE:
            raise
        print(f"error [{name}]: {artifacts.unwritable_message(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:
        if tracker is not None:
            tracker.finish(ok=False)
        raise
    except KeyboardInterrupt:
        if tracker is not None:
            tracker.finish(ok=False)
        raise SystemExit(130) from None


def training_metrics(training: dict) -> dict:
    """The stage's training records (training.training_record) as flat MLflow metrics:
    `train/<model>/<epochs|best_epoch|capped|val>` (model names made MLflow-safe)."""
    out = {}
    for model, r in training.items():
        safe = re.sub(r"[^A-Za-z0-9_.\- ]", "_", model)
        out.update({f"train/{safe}/{k}": float(r[k]) for k in ("epochs", "best_epoch", "capped", "val")
                    if r.get(k) is not None})
    return out


def _summary(final: dict) -> str:
    items = [(k, v) for k, v in final.items() if isinstance(v, float)][:6]
    return ", ".join(f"{k}={v:.4f}" for k, v in items)
