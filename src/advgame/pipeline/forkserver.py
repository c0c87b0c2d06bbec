"""Warm start-ups for the pipeline's stages: a fork server and its client (`advgame warm`, warm.py).

Every stage is its own process (`python stages/<x>.py ...`, as DVC runs it), and on a 2-core CPU
host a third of a short stage's wall is the same start-up every time: `import torch` (2-3 s),
MLflow (2-3 s), torch._dynamo (1.5 s, imported by the first optimizer), MLflow's map of installed
packages (2.7 s in every stage that logs a model), then the interpreter's teardown. This server
imports those third-party modules once and forks a process per stage that already has them:

    python forkserver.py serve SOCKET PID # imports, then answers on a unix socket while PID lives
    python -S forkserver.py client ARGS   # the client: what a `python` on PATH runs (warm.py's shim)

The client sends its argv, working folder and environment, with its stdin, stdout and stderr
themselves (SCM_RIGHTS), and waits: the server forks a monitor, which forks the stage's process.
That process takes the client's descriptors, folder, environment, argv and sys.path (PYTHONPATH
resolved against its folder, as a fresh interpreter would), runs the script (`runpy`, as
`__main__`) or `-m module`, runs the atexit handlers and exits without the interpreter's teardown.
The monitor reports its exit status (or the signal that ended it) to the client, which exits the
same way; a signal the client gets goes to the stage's process group, and a client that dies
(kill -9) takes the stage down with it.

The project's own code is never preloaded (the server refuses to run if anything imported it):
each stage imports advgame from its own sys.path, so an edit, a seed experiment's copy of the code
or another checkout is what runs. A request the server cannot serve exactly as a fresh
interpreter would (another Python, an environment variable read at import time that differs, an
interpreter option, `-c`) is refused and the client execs the real interpreter: never a
different result, at worst a cold start. Standard library only, at the top: the client runs with
`-S` and must start in milliseconds.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys

SOCKET_ENV, PYTHON_ENV = "ADVGAME_WARM", "ADVGAME_WARM_PYTHON"
# what the stages import from outside the standard library (tests/test_warm.py keeps it complete)
PRELOAD = ("numpy", "scipy.stats", "statsmodels.stats.proportion", "sklearn.model_selection", "yaml", "pydantic",
           "psutil", "tqdm.auto", "torch", "torch.nn.functional", "torch._dynamo", "torchvision", "torchvision.models",
           "matplotlib", "matplotlib.pyplot", "mlflow", "mlflow.entities", "mlflow.pytorch", "mlxtend.data",
           "art.estimators.classification", "art.attacks.evasion")
# environment variables read when those modules are imported: a request that differs in one is
# served cold (PYTHONPATH aside: each stage's own sys.path is built from the request's)
IMPORT_TIME = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "ATEN_", "TORCH", "PYTORCH", "CUDA_",
               "NVIDIA_", "LD_", "MPL", "TF_", "JAX_")
KIND = socket.AF_UNIX


# ----------------------------------------------------------------------------- the client

def warmable(args: list[str]) -> bool:
    """A script (`x.py ...`) or a module (`-m mod ...`) and no interpreter option: what the
    server can run as a fresh `python ARGS` would."""
    if args[:1] == ["-m"]:
        return len(args) >= 2 and not args[1].startswith("-")
    return bool(args) and not args[0].startswith("-") and args[0].endswith(".py") and os.path.isfile(args[0])


def dvc_pipeline() -> str | None:
    """The pipeline a stage started here belongs to, as advgame.pipeline.store.pipeline_id finds it
    from a cold stage's parents (the `dvc` process above it, its pid and start time): a warm
    stage's parents are the server's, so the client names it (ADVGAME_PIPELINE_ID), from /proc."""
    try:
        with open("/proc/stat") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith("btime"))
        pid = os.getppid()
        while pid > 1:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")[:3]
            if any(os.path.basename(a.decode(errors="replace")) == "dvc" for a in argv):
                exp = os.environ.get("DVC_EXP_NAME", "")
                return f"dvc-{pid}-{int(int(stat[19]) / os.sysconf('SC_CLK_TCK') + boot)}" + (f"-{exp}" if exp else "")
            pid = int(stat[1])
    except (OSError, ValueError, StopIteration):
        pass
    return None


def _exec_real(real: str, args: list[str]) -> None:
    os.execv(real, [real, *args])


def client(args: list[str]) -> None:
    real = os.environ.get(PYTHON_ENV) or sys.executable
    path = os.environ.get(SOCKET_ENV)
    if not path or not warmable(args):
        _exec_real(real, args)
    try:
        s = socket.socket(KIND, socket.SOCK_STREAM)
        s.connect(path)
        env = dict(os.environ)
        if "ADVGAME_PIPELINE_ID" not in env and dvc_pipeline():
            env["ADVGAME_PIPELINE_ID"] = dvc_pipeline()
        payload = json.dumps({"argv": args, "cwd": os.getcwd(), "env": env,
                              "python": os.path.abspath(real)}).encode()
        socket.send_fds(s, [len(payload).to_bytes(8, "big") + payload], [0, 1, 2])
        replies = s.makefile("rb")
        first = json.loads(replies.readline() or b'{"fallback": "no answer"}')
    except (OSError, ValueError):
        first = {"fallback": "no server"}
    if "fallback" in first:
        _exec_real(real, args)
    pid = first["pid"]

    def forward(signum, _frame):
        try:
            os.killpg(pid, signum)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    line = replies.readline()
    status = json.loads(line)["status"] if line else None
    if status is None:
        print("advgame warm: the stage's process ended without a status", file=sys.stderr)
        os._exit(1)
    if status < 0:  # ended by a signal: end the same way, so the caller sees what a cold run shows
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status)


# ----------------------------------------------------------------------------- the server

def preload() -> list[str]:
    """Import PRELOAD (those installed), then what MLflow's model logging computes in every
    process that logs a model: the map of installed packages to modules. Returns sys.path without
    this script's folder and the server's own PYTHONPATH entries (each request brings its own)."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()  # a cache, filled once for every fork
    except (ImportError, AttributeError):
        pass
    own = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    return [p for p in sys.path if os.path.abspath(p or ".") not in own]


def cuda_device() -> bool:
    """Whether this machine has an NVIDIA device: a fork cannot use CUDA once its parent touched
    it, and the preloaded imports may have asked how many devices there are."""
    import glob

    return bool(glob.glob("/dev/nvidia[0-9]*"))


def incompatible(req: dict, env: dict, added: dict | None = None) -> str:
    """Why this server cannot run the request as a fresh interpreter would ('' if it can). `env`:
    the server's environment before its imports; `added`: what those imports set in it (a
    request that has the same value, as from a process that imported torch too, is served)."""
    if req.get("python") != os.path.abspath(sys.executable):  # a venv's python: its own site-packages
        return "another interpreter"
    added = added or {}
    for k in set(env) | set(req["env"]):
        v = req["env"].get(k)
        if k != "PYTHONPATH" and k.startswith(IMPORT_TIME) and env.get(k) != v and not (k in added and added[k] == v):
            return f"{k} differs"
    if cuda_device():
        return "a CUDA device (the stages start cold there)"
    return ""


def _recv(conn: socket.socket) -> tuple[dict, list[int]]:
    """A request: 8 bytes of length, its JSON, and the client's descriptors 0-2 (closed again
    where the request is cut short)."""
    data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
    try:
        n = int.from_bytes(data[:8], "big") if len(data) >= 8 else -1
        data = data[8:]
        while 0 <= n and len(data) < n:
            more = conn.recv(n - len(data))
            if not more:
                break
            data += more
        if n < 0 or len(data) != n:
            raise ValueError("a request cut short")
        return json.loads(data), list(fds)
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        raise


def _send(conn: socket.socket, obj: dict) -> None:
    try:
        conn.sendall(json.dumps(obj).encode() + b"\n")
    except OSError:
        pass


def serve(path: str, parent: int) -> None:
    """Serve on `path` while process `parent` (the `advgame warm` that started it) lives."""
    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)  # this script's folder holds the pipeline's modules: never import from it
    env = dict(os.environ)
    base = preload()
    if any(m == "advgame" or m.startswith("advgame.") for m in sys.modules):  # (the client then runs cold)
        sys.exit("forkserver: a preloaded module imported the project's code; each stage must import its own")
    added = {k: v for k, v in os.environ.items() if k not in env}  # set by an import (torch's cache folders)
    listener = socket.socket(KIND, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        if not select.select([listener], [], [], 1.0)[0]:
            if os.getppid() != parent:  # `advgame warm` is gone without stopping it (kill): so is its server
                os.unlink(path)
                return
            _reap()
            continue
        conn, _ = listener.accept()
        _reap()
        try:
            req, fds = _recv(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        why = incompatible(req, env, added) or ("" if len(fds) == 3 else "no descriptors")
        if why:
            _send(conn, {"fallback": why})
        elif os.fork() == 0:
            listener.close()
            _monitor(conn, req, fds, base, added)
        for fd in fds:
            os.close(fd)
        conn.close()


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _monitor(conn: socket.socket, req: dict, fds: list[int], base: list[str], added: dict) -> None:
    """The stage's parent: forks it, tells the client its pid, then waits for whichever comes
    first, the stage's end (its status goes to the client) or the client's (the stage is killed)."""
    try:
        pid = os.fork()
        if pid == 0:
            _stage(conn, req, fds, base, added)
        try:
            os.setpgid(pid, pid)  # as the stage does itself: whichever runs first, before a signal comes
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        _send(conn, {"pid": pid})
        _send(conn, {"status": _wait(conn, pid)})
    finally:
        os._exit(0)


def _wait(conn: socket.socket, pid: int) -> int:
    try:
        done = os.pidfd_open(pid)
    except (AttributeError, OSError):
        done = None
    while True:
        ready, _, _ = select.select([conn] + ([done] if done is not None else []), [], [], 0.05)
        if conn in ready and not conn.recv(1):  # the client is gone: so is its stage
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            return os.waitstatus_to_exitcode(status)


def _stage(conn: socket.socket, req: dict, fds: list[int], base: list[str], added: dict) -> None:
    """The stage's own process: the client's descriptors, folder, environment (with what the
    preloaded imports set, as they would have) and argv, then the script; never returns."""
    import atexit

    code = 1
    try:
        os.setpgid(0, 0)
        conn.close()
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update({**added, **req["env"]})
        _fresh_interpreter_state()
        code = _run(req["argv"], base)
    except SystemExit as e:
        code = _exit_code(e.code)
    except KeyboardInterrupt as e:  # what a fresh interpreter does: the traceback, then die by SIGINT
        _print_exc(e)
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException as e:  # noqa: BLE001  (an uncaught exception: its traceback and status 1)
        _print_exc(e)
        code = 1
    finally:
        _flush()
        try:
            atexit._run_exitfuncs()  # MLflow's and the stage's own handlers; the teardown is skipped
        finally:
            _flush()
            os._exit(code)


def _fresh_interpreter_state() -> None:
    """What differs between a fork of the server and a fresh interpreter, reset: the standard
    streams on this process's descriptors (buffered as Python buffers them), signal handlers,
    import caches and numpy's and torch's OS-seeded generators."""
    import importlib

    sys.stdin = sys.__stdin__ = open(0, "r", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    importlib.invalidate_caches()  # (`random` reseeds itself in a fork: os.register_at_fork)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if "torch" in sys.modules:  # a fresh interpreter seeds torch's generator from the OS too
        sys.modules["torch"].seed()


def _run(argv: list[str], base: list[str]) -> int:
    import runpy

    extra = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if argv[0] == "-m":
        sys.argv = ["-m", *argv[2:]]  # runpy puts the module's path in argv[0], as `python -m` does
        sys.path[:] = [os.getcwd(), *extra, *base]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:  # as `python script.py` sets it up: argv as given, __file__ absolute, no __spec__
        import importlib.machinery
        import types

        script = os.path.abspath(argv[0])
        sys.argv = list(argv)
        sys.path[:] = [os.path.dirname(script), *extra, *base]
        main = types.ModuleType("__main__")
        main.__dict__.update(__file__=script, __cached__=None, __builtins__=__builtins__,
                             __loader__=importlib.machinery.SourceFileLoader("__main__", script))
        sys.modules["__main__"] = main
        with open(script, "rb") as f:
            code = compile(f.read(), script, "exec")
        exec(code, main.__dict__)
    return 0


def _print_exc(e: BaseException) -> None:
    """The traceback a fresh interpreter prints: from the script's frames on, not this file's."""
    import traceback

    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _flush() -> None:
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:  # serve SOCKET PARENT_PID
        serve(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["client"]:
        client(sys.argv[2:])
    else:
        sys.exit("usage: forkserver.py serve SOCKET PARENT_PID | client ARGS...")
