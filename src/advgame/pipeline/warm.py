"""`advgame warm [-- CMD ...]`: run CMD (default: `dvc repro`) with warm start-ups for every stage it
runs (`make study` does). A fork server (forkserver.py) imports torch, MLflow and the other
third-party modules once; a `python` shim first on CMD's PATH sends each `python stages/<x>.py ...`
to it, and the stage runs in a fork that already has them, with its own argv, folder, environment,
standard streams and sys.path, and exits without the interpreter's teardown. What runs is the
same code on the same inputs: a stage's outputs are byte-identical warm and cold
(tests/test_e2e.py reruns stages cold and compares), so DVC's records, the run cache and the code
hashes do not see the difference. What the server cannot run exactly as a fresh interpreter
would (another interpreter, an import-time environment variable that differs, `python -c`) runs
cold, as does everything when the server does not start.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from advgame.pipeline import forkserver, hostload

SERVER = Path(forkserver.__file__).resolve()


@dataclass(frozen=True)
class Warm:
    """A running fork server: `env(base)` is `base` with its shim first on PATH."""
    bin: str
    socket: str
    python: str
    seconds: float

    def env(self, base: dict[str, str]) -> dict[str, str]:
        return {**base, "PATH": f"{self.bin}{os.pathsep}{base.get('PATH', '')}",
                forkserver.SOCKET_ENV: self.socket, forkserver.PYTHON_ENV: self.python}


def _shims(folder: Path, python: str) -> None:
    folder.mkdir()
    for name in ("python", "python3"):
        f = folder / name
        f.write_text(f"#!/bin/sh\nexec {shlex.quote(python)} -S {shlex.quote(str(SERVER))} client \"$@\"\n")
        f.chmod(0o755)


def _ready(proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        line = proc.stdout.readline()
        if not line:  # it exited
            return False
        if line.strip() == "ready":
            return True
    return False


@contextlib.contextmanager
def server(env: dict[str, str] | None = None, python: str | None = None, timeout: float = 300.0) -> Iterator[Warm | None]:
    """A fork server for the `python` that `env`'s PATH finds (or `python`); yields a Warm, or None
    where it did not start (then run cold). Stopped, its folder removed, on exit."""
    env = dict(os.environ if env is None else env)
    real = os.path.abspath(python or shutil.which("python", path=env.get("PATH")) or sys.executable)
    tmp = Path(tempfile.mkdtemp(prefix="advgame-warm-"))
    t0 = time.monotonic()
    proc = subprocess.Popen([real, str(SERVER), "serve", str(tmp / "s"), str(os.getpid())], stdout=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        if _ready(proc, timeout):
            _shims(tmp / "bin", real)
            yield Warm(str(tmp / "bin"), str(tmp / "s"), real, round(time.monotonic() - t0, 2))
        else:
            print("advgame warm: the fork server did not start; the stages start cold", file=sys.stderr)
            yield None
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="advgame warm", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="the command (default: dvc repro); `--` before it")
    a = ap.parse_args(argv)
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    cmd = cmd or ["dvc", "repro"]
    with server() as w:
        if w is not None:
            print(f"advgame warm: a fork server with torch and MLflow loaded ({w.seconds:.1f}s); "
                  f"the stages of `{' '.join(cmd)}` start from it", flush=True)
        try:
            # what else runs beside the stages (the cost table's `others`), at a pipeline's root
            with hostload.sampling() if Path("dvc.yaml").exists() else contextlib.nullcontext():
                return subprocess.call(cmd, env=w.env(dict(os.environ)) if w else None)
        except KeyboardInterrupt:
            return 130
