"""The one place that talks to MLflow.

Every stage execution is one MLflow run, child of one parent run per pipeline execution (one
`dvc repro` / `dvc exp run`), tagged with the stage name, a hash of its inputs and params and the
git commit. The tracking URI is absolute: `MLFLOW_TRACKING_URI` if set, else a SQLite file at the
repository root. `ADVGAME_TRACKING=off` turns tracking off (unit tests).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from advgame import UserError
from advgame.pipeline.store import (  # noqa: F401  (re-exported: where the store is, cheap checks)
    PIPELINE_OUTPUTS, _quiet_mlflow_env, artifact_root, check_writable, enabled, git_commit, is_local_store,
    main_root, pipeline_id, probe, repo_root, tracking_uri)

EXPERIMENT = "advgame"


def connect(root: str | Path | None = None):
    """Set the tracking URI, make sure the server answers and the experiment exists.

    Fails with one line (UserError) before any training if the server is unreachable."""
    _quiet_mlflow_env()
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow

    uri = tracking_uri(root)
    check_writable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.get_experiment_by_name(EXPERIMENT)
        if exp is None:
            # a server (http[s]://) keeps its own artifact store; only a local store gets ours
            local = {"artifact_location": artifact_root(root)} if is_local_store(uri) else {}
            exp_id = mlflow.create_experiment(EXPERIMENT, **local)
        else:
            exp_id = exp.experiment_id
    except Exception as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(
            f"MLflow tracking at {uri} is unreachable ({msg}); start the server, fix "
            "MLFLOW_TRACKING_URI, or set ADVGAME_TRACKING=off to run without tracking"
        ) from None
    return mlflow, exp_id


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _process_alive(tag: str | None) -> bool:
    """tag = 'host:pid' of the process that owns a run; unknown owners count as alive."""
    import socket

    if not tag or ":" not in tag:
        return True
    host, pid = tag.rsplit(":", 1)
    if host != socket.gethostname():
        return True
    try:
        import psutil

        return psutil.pid_exists(int(pid))
    except (ImportError, ValueError):
        return True


class Tracker:
    """An MLflow run for one stage execution; a no-op when tracking is off."""

    def __init__(self, stage: str, params: dict, tags: dict, root: str | Path | None = None,
                 all_params: dict | None = None, background: bool = False):
        """`background`: open the run in a thread while the stage works (importing MLflow and
        opening its store take ~1.5 s of every stage's start-up); the first call that needs the
        run waits for it. A store that cannot be reached or written still stops the stage now
        (`probe`); a failure while opening stops it at that first call, in the same one line."""
        self.active = enabled()
        self.stage = stage
        self.error: Exception | None = None  # the first tracking failure after the run opened
        self.not_logged: list[str] = []      # what that failure (and everything after it) lost
        self._opening: threading.Thread | None = None
        self._open_error: BaseException | None = None
        if not self.active:
            self.run_id = None
            return
        args = (stage, params, tags, root, all_params)
        if not background:
            self.run_id = None
            self._open(*args)
            return
        probe(tracking_uri(root))
        self._opening = threading.Thread(target=self._open_in_thread, args=args, name="mlflow-open", daemon=True)
        self._opening.start()

    def _open_in_thread(self, *args) -> None:
        try:
            self._open(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the stage's thread by _ready
            self._open_error = e

    def _ready(self) -> None:
        """Wait for a run opening in the background; raise what stopped it, once."""
        if self._opening is None:
            return
        self._opening.join()
        self._opening = None
        if self._open_error is not None:
            e, self._open_error = self._open_error, None
            self.run_id = None
            raise e

    def __getattr__(self, name: str):
        """The run's attributes (run_id, client, parent_id, ...) wait for a background opening."""
        if name.startswith("__") or self.__dict__.get("_opening") is None:
            raise AttributeError(name)
        self._ready()
        return getattr(self, name)

    def _open(self, stage: str, params: dict, tags: dict, root, all_params) -> None:
        import getpass
        import socket

        mlflow, exp_id = connect(root)
        self.mlflow = mlflow
        self.client = mlflow.MlflowClient()
        self.uri = mlflow.get_tracking_uri()
        self._close_stale_runs(exp_id)
        exp_name = os.environ.get("DVC_EXP_NAME", "")
        common = {"mlflow.user": getpass.getuser(), "mlflow.source.git.commit": tags.get("advgame.git_commit", ""),
                  **({"advgame.dvc_exp": exp_name} if exp_name else {})}
        parent = self._parent_run(exp_id, common, all_params)
        run = self.client.create_run(exp_id, run_name=stage, tags={
            "mlflow.parentRunId": parent, "advgame.stage": stage, "mlflow.source.type": "LOCAL",
            "mlflow.source.name": f"stages ({stage})", "advgame.owner": f"{socket.gethostname()}:{os.getpid()}",
            **common, **tags})
        self.run_id = run.info.run_id
        self.parent_id = parent
        self._log_params(self.run_id, params)

    def _log_params(self, run_id: str, params: dict) -> None:
        flat = _flatten(params)
        batch = [self.mlflow.entities.Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(batch), 100):
            self.client.log_batch(run_id, params=batch[i:i + 100])

    def _close_stale_runs(self, exp_id: str) -> None:
        """A stage's run still RUNNING whose process on this host is gone (killed, -9, a session
        that ended) is marked KILLED and its pipeline run FAILED, by whichever stage opens next,
        not only a rerun of that stage: a killed stage whose outputs were put back (`dvc
        checkout`, the run cache) never reruns. A run of another host, or of a live process (a
        queue worker beside this one), is left alone."""
        stale = self.client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=200)
        for r in stale:
            if r.data.tags.get("advgame.stage", "pipeline") != "pipeline" and not _process_alive(r.data.tags.get("advgame.owner")):
                self.client.set_terminated(r.info.run_id, "KILLED")
                parent = r.data.tags.get("mlflow.parentRunId")
                if parent:
                    self.client.set_terminated(parent, "FAILED")

    def _parent_run(self, exp_id: str, tags: dict, all_params: dict | None) -> str:
        """One parent per pipeline execution: RUNNING while a stage runs, FINISHED after each
        stage that succeeds (the last one leaves it FINISHED), FAILED when a stage fails. It
        holds the pipeline's params and, after the report stage, the headline metrics."""
        pid = pipeline_id()
        found = self.client.search_runs([exp_id], f"tags.`advgame.pipeline_id` = '{pid}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "FAILED":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(exp_id, run_name=f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}",
                                     tags={"advgame.pipeline_id": pid, "advgame.stage": "pipeline",
                                           "mlflow.source.name": "dvc", **tags})
        if all_params:
            self._log_params(run.info.run_id, all_params)
        return run.info.run_id

    def _safe(self, what: str, fn, *args, **kwargs) -> None:
        """Run one tracking call. Once the run is open, a failing store must not cost the stage's
        work: the first failure is kept, this and every later call are only recorded as not
        logged, and `finish` says so in one line."""
        self._ready()
        if not (self.active and self.run_id):
            return
        if self.error is None:
            try:
                fn(*args, **kwargs)
                return
            except Exception as e:
                self.error = e
        self.not_logged.append(what)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, run_id: str | None = None) -> None:
        if not self.active:
            return
        self._ready()
        ts = int(time.time() * 1000)
        ms = [self.mlflow.entities.Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]

        def send():
            for i in range(0, len(ms), 500):
                self.client.log_batch(run_id or self.run_id, metrics=ms[i:i + 500])
        if ms:
            self._safe("metrics" + (f" (step {step})" if step is not None else ""), send)

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        """Headline metrics on the pipeline's parent run (the report stage calls this)."""
        if self.active:
            self._ready()
            self.log_metrics(metrics, run_id=self.parent_id)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, parent: bool = False) -> None:
        if self.active:
            self._ready()
            self._safe(f"artifact {path}", self.client.log_artifact,
                       self.parent_id if parent else self.run_id, str(path), artifact_path)

    def log_model(self, model, name: str, example) -> None:
        """Log a trained torch model as an MLflow model named for its defender (pt2 format: a
        traced graph, no pickle); `example` is an input batch MLflow traces the model with and
        infers the signature from."""
        if not self.active:
            return

        def send():
            import mlflow.pytorch

            with self.mlflow.start_run(run_id=self.run_id):
                mlflow.pytorch.log_model(model.cpu().eval(), name=name, input_example=example[:2].cpu().numpy(),
                                         serialization_format="pt2", pip_requirements=_pinned_requirements())
        self._safe(f"model {name}", send)

    def log_dataset(self, meta_path: str | Path, context: str = "input") -> None:
        """The prepared dataset as an MLflow dataset input of this run, one per split, digest =
        the split's sha256 from meta.json (cut to the 36 characters MLflow's schema stores; the
        full sha256 is in the dataset's source)."""
        if self.active and Path(meta_path).exists():
            self._ready()
            self._safe(f"dataset {meta_path}", self.client.log_inputs, self.run_id,
                       datasets=dataset_inputs(meta_path, context))

    def register_defenders(self, params) -> dict[str, str]:
        """Register every final defender's logged model (see advgame.pipeline.mlflow_registry); the report
        stage calls this once it has every evaluation."""
        from advgame.pipeline import mlflow_registry as model_registry

        out: dict[str, str] = {}
        self._safe("registered models", lambda: out.update(model_registry.register_defenders(self, params)))
        return out

    def finish(self, ok: bool = True) -> None:
        """Close the run (and mark the parent); never raises: it runs inside error handlers.
        After a tracking failure it prints one line: what was not logged and how to log it."""
        try:
            self._ready()
            if not (self.active and self.run_id):
                return
            self._safe("run status", self.client.set_terminated, self.run_id, "FINISHED" if ok else "FAILED")
            self._safe("pipeline run status", self.client.set_terminated, self.parent_id,
                       "FINISHED" if ok else "FAILED")
            if self.error is not None:
                import sys

                print(self.failure_line(), file=sys.stderr)
        except BaseException:  # noqa: BLE001 - nothing here may hide the stage's own error
            pass

    def failure_line(self) -> str:
        e = self.error
        msg = (str(e).splitlines() or [""])[0][:160] if e is not None else ""
        lost = list(dict.fromkeys(self.not_logged))
        shown = ", ".join(lost[:4]) + (f" and {len(lost) - 4} more" if len(lost) > 4 else "")
        return (f"warning [{self.stage}]: MLflow at {self.uri} failed ({type(e).__name__}: {msg}); "
                f"the stage's outputs are kept; not logged to run {self.run_id}: {shown}; to log "
                f"them, rerun `dvc repro -f -s {self.stage}` once the store answers (same params, "
                "same outputs)")


def dataset_inputs(meta_path: str | Path, context: str = "input") -> list:
    import json

    from mlflow.entities import Dataset, DatasetInput, InputTag

    meta = json.loads(Path(meta_path).read_text())
    out = []
    for split in ("train", "test"):
        info = meta.get(split) or {}
        if "sha256" not in info:
            continue
        source = json.dumps({"path": str(Path(meta_path).parent / f"{split}.pt"), "sha256": info["sha256"]})
        schema = json.dumps({"shape": info.get("shape"), "classes": meta.get("classes")})
        ds = Dataset(name=f"{meta.get('dataset', 'data')}-{split}", digest=info["sha256"][:36],
                     source_type="local", source=source, schema=schema,
                     profile=json.dumps({"num_rows": (info.get("shape") or [None])[0]}))
        out.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", f"{context}:{split}")]))
    return out


def _pinned_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch')}", f"torchvision=={version('torchvision')}"]
