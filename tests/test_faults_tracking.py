"""Tracking faults never cost a stage's compute: an unwritable store stops the stage at its
start in seconds with one line; a store that fails after the work keeps the outputs and says in
one line what was not logged; finish() never raises; a stage killed with -9 leaves no RUNNING run
once it has rerun."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from advgame import UserError
from advgame.pipeline import tracking
from advgame.pipeline.stage import run_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def store(tmp_path, monkeypatch, request):
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ADVGAME_PIPELINE_ID", request.node.name)
    (tmp_path / "params.yaml").write_text("{}\n")
    yield uri, mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)


def test_an_unwritable_sqlite_store_stops_the_stage_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "store.db").mkdir()  # a folder where the database file should be: cannot be opened
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store.db'}")
    ran = []
    with pytest.raises(SystemExit) as e:
        run_stage("demo", lambda ctx: ran.append(1), sections=["run"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and ran == [] and not (tmp_path / "reports").exists()
    assert len(err.splitlines()) == 1 and "cannot be written" in err and "store.db" in err
    # (without the check MLflow retries for ~110 s, printing a warning per retry)


def test_check_writable_names_a_path_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="cannot be written"):
        tracking.check_writable(f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}")
    tracking.check_writable(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # creatable: fine
    tracking.check_writable("http://127.0.0.1:9")  # servers are checked by connect()


def test_a_store_failing_after_the_work_keeps_the_outputs(store, tmp_path, monkeypatch, capsys):
    def body(ctx):
        (tmp_path / "out.txt").write_text("result")  # the stage's work
        ctx.log({"train_loss": 0.5}, step=0)  # still logged

        def down(*a, **k):
            raise ConnectionError("server gone\nsecond line")
        for name in ("log_batch", "log_artifact", "set_terminated", "log_inputs"):
            monkeypatch.setattr(ctx.tracker.client, name, down)
        ctx.log({"train_loss": 0.4}, step=1)
        ctx.tracker.log_artifact(tmp_path / "out.txt", "out")
        return {"clean_error": 0.1}

    run_stage("demo", body, sections=["run"])  # no exception, exit status 0
    err = capsys.readouterr()
    assert (tmp_path / "out.txt").read_text() == "result"
    assert (tmp_path / "reports/stages/demo.json").exists()
    lines = [ln for ln in err.err.splitlines() if ln.strip()]
    assert len(lines) == 1, err.err
    assert "not logged" in lines[0] and "metrics (step 1)" in lines[0] and "out.txt" in lines[0]
    assert "dvc repro -f -s demo" in lines[0] and "ConnectionError: server gone" in lines[0]
    assert "demo: done" in err.out
    exp = store[1].get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = store[1].search_runs([exp.experiment_id], "tags.`advgame.stage` = 'demo'")
    assert [m.value for m in store[1].get_metric_history(run.info.run_id, "train_loss")] == [0.5]


def test_finish_never_raises(store, monkeypatch):
    t = tracking.Tracker("demo", {}, {})

    def boom(*a, **k):
        raise KeyboardInterrupt  # even a BaseException inside finish stays inside it
    monkeypatch.setattr(t, "_safe", boom)
    t.finish(ok=False)
    monkeypatch.undo()


def test_failure_in_a_handler_keeps_the_stage_error(store, monkeypatch, capsys):
    def body(ctx):
        monkeypatch.setattr(ctx.tracker.client, "set_terminated",
                            lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        raise RuntimeError("the stage's own bug")

    with pytest.raises(RuntimeError, match="own bug"):
        run_stage("demo", body, sections=["run"])
    assert "disk full" in capsys.readouterr().err


SLOW_STAGE = """
import sys, time
from advgame.pipeline.stage import run_stage

def body(ctx):
    if sys.argv[1] == "hang":
        assert ctx.tracker.run_id  # the run opens in the background: wait for it
        print("working", flush=True)
        time.sleep(120)
    return {}

run_stage(sys.argv[2] if len(sys.argv) > 2 else "slow", body, sections=["run"])
"""


def test_kill_9_then_any_stage_that_runs_leaves_no_running_run(store, tmp_path):
    # not only the killed stage's rerun: `dvc checkout` (or the run cache) may put its outputs back,
    # and then only other stages ever run after it
    (tmp_path / "slow.py").write_text(SLOW_STAGE)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("ADVGAME_PIPELINE_ID")  # as under dvc: each process's own pipeline id
    p = subprocess.Popen([sys.executable, "slow.py", "hang"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "working"  # its run is open
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    exp = store[1].get_experiment_by_name(tracking.EXPERIMENT)
    running = store[1].search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    assert {r.data.tags["advgame.stage"] for r in running} == {"slow", "pipeline"}
    r = subprocess.run([sys.executable, "slow.py", "ok", "other"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    runs = store[1].search_runs([exp.experiment_id], "")
    assert not [x for x in runs if x.info.status == "RUNNING"]
    by_status = sorted((x.data.tags["advgame.stage"], x.info.status) for x in runs)
    assert by_status == [("other", "FINISHED"), ("pipeline", "FAILED"), ("pipeline", "FINISHED"), ("slow", "KILLED")]
