"""Warm start-ups (advgame.pipeline.warm, forkserver): a script run through the fork server behaves
as a fresh interpreter running it would (output, exit status, argv, folder, environment,
sys.path, tracebacks, signals), and whatever the server cannot run exactly runs cold. Every
comparison is warm against cold on the same script; that the fork is warm is checked by the
preloaded torch, which a cold interpreter has not imported."""
import ast
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advgame import cli
from advgame.pipeline import forkserver, hostload, warm

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import os, sys
print("warm:", "torch" in sys.modules, "project loaded:", any(m.split(".")[0] == "advgame" for m in sys.modules))
print("argv", sys.argv, "cwd", os.getcwd(), "name", __name__, "file", __file__, "spec", __spec__)
print("path", sys.path[:2], "env", os.environ.get("X"), "stdin", sys.stdin.read())
import helper
print("helper", helper.__file__, file=sys.stderr)
import subprocess
print("child status", subprocess.run(["sh", "-c", "exit 5"]).returncode)
code = sys.argv[1] if len(sys.argv) > 1 else "0"
if code == "raise":
    raise ValueError("from the script")
sys.exit(int(code) if code.isdigit() else code)
'''


@pytest.fixture()
def server(warm_server):
    return warm_server


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/helper.py").write_text("")
    (tmp_path / "lib/mod.py").write_text("import sys\nprint('mod', sys.argv, __name__)\n")
    (tmp_path / "s.py").write_text(SCRIPT)
    return tmp_path


def both(server, args, cwd, **env):
    """The same command warm and cold: (warm result, cold result)."""
    base = {**os.environ, "X": "1", "PYTHONPATH": "lib", **env}
    out = []
    for e in (server.env(base), base):
        out.append(subprocess.run(["python", *args], cwd=cwd, env=e, input="in", capture_output=True, text=True,
                                  timeout=120))
    return out


def test_a_script_runs_as_a_fresh_interpreter_would(server, folder):
    for arg in ("0", "3", "a message", "raise"):
        w, c = both(server, ["s.py", arg], folder)
        assert w.stdout.startswith("warm: True project loaded: False") and c.stdout.startswith("warm: False")
        assert w.stdout.split("\n", 1)[1] == c.stdout.split("\n", 1)[1]
        assert (w.stderr, w.returncode) == (c.stderr, c.returncode)
    assert "ValueError: from the script" in w.stderr and w.returncode == 1
    assert "forkserver" not in w.stderr  # the traceback starts at the script, as a fresh one does


def test_a_module_runs_as_python_m_would(server, folder):
    w, c = both(server, ["-m", "mod", "x"], folder)
    assert (w.stdout, w.stderr, w.returncode) == (c.stdout, c.stderr, c.returncode)
    assert "mod.py" in w.stdout and "__main__" in w.stdout


def test_what_it_cannot_run_exactly_runs_cold(server, folder):
    w, c = both(server, ["-c", "import sys; print('torch' in sys.modules)"], folder)
    assert w.stdout == c.stdout == "False\n"
    w, c = both(server, ["s.py"], folder, OMP_NUM_THREADS="1")  # read when torch is imported
    assert w.stdout.startswith("warm: False") and w.stdout == c.stdout
    gone = {**server.env({**os.environ, "PYTHONPATH": "lib"}), forkserver.SOCKET_ENV: str(folder / "no-server")}
    r = subprocess.run(["python", "s.py"], cwd=folder, env=gone, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("warm: False")


def test_each_fork_draws_its_own_random_state(server, folder):
    (folder / "r.py").write_text("import random, torch\nprint(torch.initial_seed(), random.random())\n")
    env = server.env({**os.environ})
    seen = [subprocess.run(["python", "r.py"], cwd=folder, env=env, capture_output=True, text=True).stdout.split()
            for _ in range(3)]
    assert all(len({run[i] for run in seen}) == 3 for i in (0, 1))  # as fresh interpreters: seeded from the OS


def wait_for(path: Path) -> int:
    for _ in range(600):
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_to_the_client_reaches_the_stage(server, folder, kill):
    (folder / "long.py").write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    p = subprocess.Popen(["python", "long.py"], cwd=folder, env=server.env({**os.environ}))
    pid = wait_for(folder / "pid")
    assert pid != p.pid  # the stage is the server's fork, not the client
    p.send_signal(kill)
    assert p.wait(30) == -kill  # the client ends as the stage did (SIGTERM) or as it was killed
    for _ in range(100):
        if not alive(pid):
            break
        time.sleep(0.05)
    assert not alive(pid)  # kill -9 of the client takes its stage down with it


def third_party_imports() -> set[str]:
    """The top-level modules outside the standard library that the stages and the library import."""
    files = [*(ROOT / "src/advgame").rglob("*.py"), *(ROOT / "stages").glob("*.py")]
    names = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("advgame", "__future__")}


def test_the_server_preloads_what_the_stages_import():
    preloaded = {m.split(".")[0] for m in forkserver.PRELOAD}
    # the tools no stage runs: DVC's API (seeds, verify) and the team server's PostgreSQL
    assert third_party_imports() - preloaded <= {"dvc", "pgserver"}
    assert not any(m.split(".")[0] == "advgame" for m in forkserver.PRELOAD)  # the project's code: never


def test_advgame_warm_runs_the_command_and_passes_its_status(warm_server, monkeypatch, capfd, tmp_path):
    monkeypatch.setattr(warm, "server", lambda: contextlib.nullcontext(warm_server))  # this worker's server
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # a pipeline's root: its samples go under it
    cmd = "python -c 'import sys; sys.exit(7)'; echo status $? \"$ADVGAME_WARM\"; exit 4"
    assert cli.main(["warm", "--", "sh", "-c", cmd]) == 4
    out = capfd.readouterr().out
    assert "fork server" in out and f"status 7 {warm_server.socket}" in out
    # what else ran beside it, for the cost table (pipeline/hostload.py; Linux's /proc/loadavg)
    if hostload.runnable() is not None:
        assert hostload.samples(tmp_path / hostload.LOG) and len(hostload.runs(tmp_path / hostload.LOG)) == 1
    (tmp_path / "dvc.yaml").unlink()
    (tmp_path / hostload.LOG).unlink(missing_ok=True)
    assert cli.main(["warm", "--", "true"]) == 0
    assert not (tmp_path / hostload.LOG).exists()  # not a pipeline's root: nothing written there


def test_a_warm_stage_belongs_to_the_dvc_run_above_it(server, tmp_path):
    # the stage's MLflow run hangs under its pipeline's parent run (store.pipeline_id: the `dvc`
    # process above the stage); a warm stage's parents are the server's, so its client names it
    (tmp_path / "dvc").write_text('#!/bin/sh\n"$@"\n')
    (tmp_path / "dvc").chmod(0o755)
    (tmp_path / "p.py").write_text("import sys\nwarm = 'torch' in sys.modules\n"
                                   "from advgame.pipeline.store import pipeline_id\nprint(warm, pipeline_id())\n")
    env = server.env({**os.environ})
    env.pop("ADVGAME_PIPELINE_ID", None)
    r = subprocess.run(["./dvc", "sh", "-c", f"python p.py; {forkserver.SOCKET_ENV}= python p.py"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    (w, warm_id), (c, cold_id) = (line.split() for line in r.stdout.splitlines())
    assert (w, c) == ("True", "False") and warm_id == cold_id and warm_id.startswith("dvc-")


def test_the_server_refuses_what_a_fresh_interpreter_would_import_differently(monkeypatch):
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    req = {"python": os.path.abspath(sys.executable), "env": {**env, "X": "anything", "PYTHONPATH": "src"}}
    added = {"TORCHINDUCTOR_CACHE_DIR": "/tmp/t"}  # what torch's import set in the server
    assert forkserver.incompatible(req, env, added) == ""
    assert forkserver.incompatible({**req, "env": {**req["env"], **added}}, env, added) == ""
    assert forkserver.incompatible({**req, "env": {**req["env"], "TORCHINDUCTOR_CACHE_DIR": "/x"}}, env, added)
    assert forkserver.incompatible({**req, "env": {**req["env"], "OMP_NUM_THREADS": "1"}}, env, added)
    assert forkserver.incompatible({**req, "env": {**req["env"], "PYTHONHASHSEED": "0"}}, env, added)
    assert forkserver.incompatible({**req, "python": "/usr/bin/python3"}, env, added) == "another interpreter"
    monkeypatch.setattr(forkserver, "cuda_device", lambda: True)
    assert "CUDA" in forkserver.incompatible(req, env, added)


def test_a_broken_request_leaves_the_server_serving(server, folder):
    import socket

    for junk in (b"", b"xy", (100).to_bytes(8, "big") + b"{}"):  # nothing, too short, cut short
        s = socket.socket(socket.AF_UNIX)
        s.connect(server.socket)
        s.sendall(junk)
        s.close()
    w, c = both(server, ["s.py"], folder)
    assert w.stdout.startswith("warm: True") and w.returncode == c.returncode == 0


def test_the_server_ends_with_the_command_that_started_it(tmp_path):
    # `advgame warm` killed outright (no clean-up of its own): its server must not outlive it
    starter = (f"import os, subprocess, sys, time\n"
               f"p = subprocess.Popen([sys.executable, {str(forkserver.__file__)!r}, 'serve', {str(tmp_path / 's')!r},"
               f" str(os.getpid())], start_new_session=True)\nprint(p.pid, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", starter], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    parent.kill()  # while the server still imports
    parent.wait()
    for _ in range(3000):  # its imports (about 10 s on an idle 2-core host), then a second at most
        if not alive(pid):
            break
        time.sleep(0.1)
    assert not alive(pid) and not (tmp_path / "s").exists()
