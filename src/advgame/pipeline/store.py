"""Where the MLflow store is and whether it can be used, without importing MLflow: the tracking
URI, the project root, the git commit a run records, the pipeline a stage belongs to, and the
cheap checks that stop a stage before its work (advgame.pipeline.tracking re-exports these)."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from advgame import UserError


def enabled() -> bool:
    return os.environ.get("ADVGAME_TRACKING", "on").lower() not in ("0", "off", "false", "no")


def repo_root(start: str | Path = ".") -> Path:
    """The folder holding dvc.yaml (the project root), searching upwards from `start`."""
    p = Path(start).resolve()
    for d in (p, *p.parents):
        if (d / "dvc.yaml").exists() or (d / ".dvc").is_dir():
            return d
    return p


def main_root(root: Path) -> Path:
    """The workspace a `dvc exp run --queue` experiment belongs to: DVC runs queued experiments
    in a temporary copy under <repo>/.dvc/tmp/exps/, whose own mlflow.db would vanish with it."""
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri(root: str | Path | None = None) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(main_root(repo_root(root or '.')) / 'mlflow.db').as_posix()}"


def artifact_root(root: str | Path | None = None) -> str:
    return (main_root(repo_root(root or ".")) / "mlartifacts").as_uri()


# what the pipeline itself rewrites (codehash.json: the `code` stage, from the sources): a change
# there does not make the commit's sources dirty
PIPELINE_OUTPUTS = ("dvc.lock", "codehash.json", "reports/", "models/", "data/", "mlflow.db", "mlartifacts/")


def git_commit(root: str | Path = ".", code_only: bool = False) -> str:
    """HEAD, with `-dirty` only when tracked sources differ from it (params, code, dvc.yaml):
    the outputs a running pipeline rewrites (dvc.lock, reports/) do not count. `code_only`: the
    newest commit that changed a source (not a commit of results alone), so that results
    committed after the code name the code that made them."""
    try:
        rev = ["git", "rev-parse", "HEAD"] if not code_only else [
            "git", "log", "-1", "--format=%H", "--", ".", *(f":(exclude){p}" for p in PIPELINE_OUTPUTS)]
        out = subprocess.run(rev, cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10).stdout.splitlines()
        dirty = [ln[3:] for ln in status if not ln[3:].startswith(PIPELINE_OUTPUTS)]
        sha = out.stdout.strip()
        return sha + ("-dirty" if dirty else "") if out.returncode == 0 and sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def is_local_store(uri: str) -> bool:
    """SQLite or a plain folder: artifacts go to a folder of ours. A server decides for itself."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def pipeline_id() -> str:
    """Identifies one pipeline execution: the `dvc` process this stage runs under (pid and start
    time), `ADVGAME_PIPELINE_ID` if set, else this process alone."""
    if os.environ.get("ADVGAME_PIPELINE_ID"):
        return os.environ["ADVGAME_PIPELINE_ID"]
    try:
        import psutil

        proc = psutil.Process().parent()
        while proc is not None:
            if any(Path(a).name == "dvc" for a in proc.cmdline()[:3]):
                # a queue worker may run several experiments: each is a pipeline of its own
                exp = os.environ.get("DVC_EXP_NAME", "")
                return f"dvc-{proc.pid}-{int(proc.create_time())}" + (f"-{exp}" if exp else "")
            proc = proc.parent()
    except Exception:  # psutil missing or a process vanished: fall back to this process
        pass
    return f"proc-{os.getpid()}-{int(time.time())}"


def _quiet_mlflow_env() -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def check_writable(uri: str) -> None:
    """A SQLite store that cannot be written stops the stage now, in one line: MLflow itself
    retries opening it for ~110 s (15 attempts with back-off) before it gives up."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3

    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=5)
        try:
            con.execute("BEGIN IMMEDIATE")  # takes the write lock, writes nothing
            con.rollback()
        finally:
            con.close()
    except (OSError, sqlite3.Error) as e:
        raise UserError(f"MLflow store {path} cannot be written ({e}); fix the folder or file's "
                        "permissions, point MLFLOW_TRACKING_URI at another store, or set "
                        "ADVGAME_TRACKING=off to run without tracking") from None


def probe(uri: str) -> None:
    """What `connect` would fail on, checked without importing MLflow (~0.1 s): a SQLite store
    that cannot be written, a server that does not answer its /health page."""
    check_writable(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    _quiet_mlflow_env()
    try:
        timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"))
    except ValueError:
        timeout = 10.0
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answers: what it answers is MLflow's to judge (connect, in the background)
    except (urllib.error.URLError, OSError, ValueError) as e:
        msg = str(getattr(e, "reason", e)).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(
            f"MLflow tracking at {uri} is unreachable ({msg}); start the server, fix "
            "MLFLOW_TRACKING_URI, or set ADVGAME_TRACKING=off to run without tracking") from None
