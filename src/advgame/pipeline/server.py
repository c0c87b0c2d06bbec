"""A team's MLflow tracking server: PostgreSQL (the `pgserver` package ships the server binaries,
so `make` installs it like any other dependency) as the backend store and a local folder as the
artifact store, served on 127.0.0.1 only. `make server` runs it in the foreground:

    python -m advgame.pipeline.server [--dir .mlflow-server] [--port 5000]
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000     # then dvc repro as usual

PostgreSQL listens on a Unix socket inside its data folder (no TCP port); MLflow's server keeps
the artifacts (`--serve-artifacts`), so clients upload and download them through HTTP and need
no access to the folder. Ctrl-C stops both.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
DB = "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_postgres(pgdata: Path):
    """Start (or join) the PostgreSQL of `pgdata` and make sure the `mlflow` database exists."""
    import pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    pg = pgserver.get_server(str(pgdata), cleanup_mode="stop")
    if DB not in pg.psql(f"SELECT datname FROM pg_database WHERE datname = '{DB}';"):
        pg.psql(f"CREATE DATABASE {DB};")
    return pg


def backend_uri(pg) -> str:
    """postgresql+psycopg2 URI of the `mlflow` database over the server's Unix socket."""
    uri = pg.get_uri(DB)  # postgresql://postgres:@/mlflow?host=<socket folder>
    return uri.replace("postgresql://", "postgresql+psycopg2://", 1)


@dataclass
class Server:
    url: str
    pg: object
    proc: subprocess.Popen

    def stop(self) -> None:
        """Stop the MLflow server (its whole process group) and PostgreSQL."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.pg.cleanup()


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} did not answer within {timeout:.0f} s")


def start(folder: str | Path, port: int | None = None, log: Path | None = None) -> Server:
    """PostgreSQL in `folder`/pgdata, artifacts in `folder`/artifacts, MLflow on HOST:port."""
    folder = Path(folder).resolve()
    pg = start_postgres(folder / "pgdata")
    port = port or free_port()
    artifacts = folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend_uri(pg),
           "--artifacts-destination", artifacts.as_uri(), "--serve-artifacts",
           "--host", HOST, "--port", str(port), "--workers", "1"]
    out = open(log, "ab") if log else None
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)
    url = f"http://{HOST}:{port}"
    try:
        wait_ready(url, proc)
    except BaseException:
        Server(url, pg, proc).stop()
        raise
    return Server(url, pg, proc)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="MLflow tracking server on PostgreSQL (127.0.0.1 only)")
    ap.add_argument("--dir", default=".mlflow-server", help="PostgreSQL data and artifacts (default %(default)s)")
    ap.add_argument("--port", type=int, default=5000)
    a = ap.parse_args(argv)
    srv = start(a.dir, a.port)
    print(f"MLflow server on {srv.url} (PostgreSQL in {a.dir}/pgdata, artifacts in {a.dir}/artifacts)\n"
          f"  export MLFLOW_TRACKING_URI={srv.url}    # then dvc repro; Ctrl-C stops the server", flush=True)
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
