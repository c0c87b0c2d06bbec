"""MLflow tracking: runs nested under one pipeline run, tags, params, metric history, a clear
error for an unreachable server, and the input hash that tags every stage run."""
from pathlib import Path

import pytest

from advgame import UserError
from advgame.pipeline import tracking
from advgame.pipeline.stage import hash_inputs, run_stage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One throwaway SQLite store per module (creating its schema takes seconds)."""
    import mlflow

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return uri, mlflow.MlflowClient(tracking_uri=uri)


@pytest.fixture
def mlflow_db(store, tmp_path, monkeypatch, request):
    """Tracking on, into the test store, as one pipeline execution of its own; cwd is tmp."""
    import mlflow

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    monkeypatch.setenv("ADVGAME_PIPELINE_ID", request.node.name)
    yield store[1]
    mlflow.set_tracking_uri(None)


def test_tracker_child_run_with_tags_and_params(mlflow_db):
    tags = {"advgame.input_hash": "abc123", "advgame.git_commit": "deadbeef"}
    t = tracking.Tracker("baseline", {"baseline": {"lr": 0.001, "epochs": 2}}, tags)
    t.finish()
    run = mlflow_db.get_run(t.run_id)
    assert run.data.tags["advgame.stage"] == "baseline"
    assert run.data.tags["advgame.input_hash"] == "abc123"
    assert run.data.tags["advgame.git_commit"] == "deadbeef"
    assert run.data.params == {"baseline.lr": "0.001", "baseline.epochs": "2"}
    assert run.info.status == "FINISHED"
    parent = mlflow_db.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_id == t.parent_id != t.run_id
    assert parent.data.tags["advgame.pipeline_id"] == "test_tracker_child_run_with_tags_and_params"


def test_trackers_of_one_pipeline_share_the_parent(mlflow_db, monkeypatch):
    a = tracking.Tracker("prepare", {}, {})
    b = tracking.Tracker("baseline", {}, {})
    assert a.parent_id == b.parent_id
    exp = mlflow_db.get_experiment_by_name(tracking.EXPERIMENT)
    children = mlflow_db.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{a.parent_id}'")
    assert {r.info.run_id for r in children} == {a.run_id, b.run_id}
    monkeypatch.setenv("ADVGAME_PIPELINE_ID", "another-pipeline")
    c = tracking.Tracker("prepare", {}, {})
    assert c.parent_id != a.parent_id
    for pid in ("another-pipeline", "test_trackers_of_one_pipeline_share_the_parent"):
        found = mlflow_db.search_runs([exp.experiment_id], f"tags.`advgame.pipeline_id` = '{pid}'")
        assert len(found) == 1  # exactly one parent per pipeline execution


def test_metric_history_by_step(mlflow_db):
    t = tracking.Tracker("baseline", {}, {})
    for step, loss in enumerate([0.9, 0.5, 0.2]):
        t.log_metrics({"loss": loss, "note": "text is skipped", "flag": True}, step=step)
    hist = mlflow_db.get_metric_history(t.run_id, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(0, 0.9), (1, 0.5), (2, 0.2)]
    assert set(mlflow_db.get_run(t.run_id).data.metrics) == {"loss"}


def test_run_stage_tags_its_run(mlflow_db, tmp_path):
    (tmp_path / "params.yaml").write_text("baseline: {epochs: 2}\n")
    (tmp_path / "dep.txt").write_text("input")

    def body(ctx):
        ctx.log({"train_loss": 1.5}, step=0)
        ctx.log({"train_loss": 0.5}, step=1)
        return {"clean_error": 0.1}

    run_stage("demo", body, sections=["baseline"], deps=["dep.txt"])
    exp = mlflow_db.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = mlflow_db.search_runs([exp.experiment_id], "tags.`advgame.stage` = 'demo'")
    assert (tmp_path / "reports/stages/demo.json").exists()
    used = {"baseline": __import__("advgame").config.load("params.yaml").baseline.model_dump()}
    assert run.data.tags["advgame.input_hash"] == hash_inputs(["dep.txt"], used)
    assert run.data.tags["advgame.git_commit"]
    assert run.data.params["baseline.epochs"] == "2"
    assert run.data.metrics["clean_error"] == 0.1
    assert [m.value for m in mlflow_db.get_metric_history(run.info.run_id, "train_loss")] == [1.5, 0.5]
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" in run.data.tags


def test_tracking_off_is_a_noop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGAME_TRACKING", "off")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    t = tracking.Tracker("baseline", {"a": 1}, {})
    t.log_metrics({"loss": 1.0}, step=0)
    t.finish()
    assert not t.active and t.run_id is None
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    for var in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(var, "x")  # record the original state, then test connect's defaults
        monkeypatch.delenv(var)
    try:
        with pytest.raises(UserError) as e:
            tracking.Tracker("baseline", {}, {})
    finally:
        import mlflow

        mlflow.set_tracking_uri(None)
    msg = str(e.value)
    assert "unreachable" in msg and "127.0.0.1:9" in msg and "ADVGAME_TRACKING=off" in msg
    assert "\n" not in msg


def test_default_tracking_uri_is_sqlite_at_repo_root(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(ROOT / "tests")  # from a subfolder too
    uri = tracking.tracking_uri()
    assert uri.startswith("sqlite:///")
    path = Path(uri.removeprefix("sqlite:///"))
    assert path.is_absolute() and path == ROOT / "mlflow.db"


def test_hash_inputs_changes_with_deps_and_params(tmp_path):
    (tmp_path / "d").mkdir()
    f, g = tmp_path / "a.txt", tmp_path / "d" / "b.txt"
    f.write_text("one")
    g.write_text("two")
    deps = [str(f), str(tmp_path / "d")]
    params = {"baseline": {"lr": 0.001, "epochs": 2}}
    h = hash_inputs(deps, params)
    assert h == hash_inputs(list(reversed(deps)), {"baseline": {"epochs": 2, "lr": 0.001}})
    assert h != hash_inputs(deps, {"baseline": {"lr": 0.001, "epochs": 3}})
    f.write_text("one!")
    h2 = hash_inputs(deps, params)
    assert h2 != h
    g.write_text("two!")  # a file inside a folder dependency
    assert hash_inputs(deps, params) != h2


def test_crashing_stage_marks_its_run_failed(mlflow_db, tmp_path):
    (tmp_path / "params.yaml").write_text("{}\n")

    def body(ctx):
        raise RuntimeError("a bug in a stage")

    with pytest.raises(RuntimeError):
        run_stage("crash", body, sections=["run"])
    assert not (tmp_path / "reports").exists()
    exp = mlflow_db.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = mlflow_db.search_runs([exp.experiment_id], "tags.`advgame.stage` = 'crash'")
    assert run.info.status == "FAILED"


def test_parent_is_running_during_a_stage_and_holds_params_and_headline(mlflow_db, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "exp-gamma")
    t = tracking.Tracker("minimax", {"game": {"gamma": 2.0}}, {}, all_params={"game": {"gamma": 2.0}, "eval": {"n_test": 5}})
    parent = mlflow_db.get_run(t.parent_id)
    assert parent.info.status == "RUNNING"  # not FINISHED at creation
    assert parent.data.params == {"game.gamma": "2.0", "eval.n_test": "5"}
    run = mlflow_db.get_run(t.run_id)
    assert run.data.tags["advgame.dvc_exp"] == "exp-gamma" and run.data.tags["mlflow.user"]
    assert run.data.tags["mlflow.source.name"]
    t.log_parent_metrics({"minimax.pgd_curr": 0.5})
    t.finish(ok=True)
    parent = mlflow_db.get_run(t.parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics == {"minimax.pgd_curr": 0.5}
    failing = tracking.Tracker("report", {}, {})
    assert mlflow_db.get_run(t.parent_id).info.status == "RUNNING"
    failing.finish(ok=False)
    assert mlflow_db.get_run(t.parent_id).info.status == "FAILED"


def test_a_killed_stage_run_is_marked_killed_by_the_next_run(mlflow_db):
    import subprocess
    import sys

    # a run whose owning process is gone (as after kill -9)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    t = tracking.Tracker("round-1", {}, {})
    import socket

    mlflow_db.set_tag(t.run_id, "advgame.owner", f"{socket.gethostname()}:{gone.pid}")
    alive = tracking.Tracker("round-2", {}, {})  # another stage's RUNNING run is not touched
    rerun = tracking.Tracker("round-1", {}, {})
    assert mlflow_db.get_run(t.run_id).info.status == "KILLED"
    assert mlflow_db.get_run(alive.run_id).info.status == "RUNNING"
    rerun.finish()
    alive.finish()
    assert mlflow_db.get_run(rerun.run_id).info.status == "FINISHED"


def test_finish_never_raises_when_the_store_is_gone(mlflow_db, capsys):
    t = tracking.Tracker("baseline", {}, {})

    def boom(*a, **k):
        raise ConnectionError("down")

    t.client.set_terminated = boom
    t.finish(ok=True)
    err = capsys.readouterr().err
    assert "not logged" in err and "run status" in err and len(err.strip().splitlines()) == 1


def test_only_local_stores_get_a_local_artifact_location():
    assert tracking.is_local_store("sqlite:////tmp/x.db") and tracking.is_local_store("/tmp/mlruns")
    assert not tracking.is_local_store("http://127.0.0.1:5000")


def test_git_dirty_ignores_what_the_pipeline_rewrites(tmp_path):
    import subprocess

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"})

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    for f in ("dvc.lock", "reports/r.json", "params.yaml"):
        (tmp_path / f).write_text("a")
    git("add", "-A")
    git("commit", "-qm", "x")
    (tmp_path / "dvc.lock").write_text("b")
    (tmp_path / "reports/r.json").write_text("b")
    assert not tracking.git_commit(tmp_path).endswith("-dirty")
    (tmp_path / "params.yaml").write_text("b")
    assert tracking.git_commit(tmp_path).endswith("-dirty")
    # the code's commit: a later commit of results alone does not move it, one of code does
    code = tracking.git_commit(tmp_path, code_only=True).removesuffix("-dirty")
    git("checkout", "params.yaml")
    git("commit", "-qam", "results")
    assert tracking.git_commit(tmp_path, code_only=True) == code != tracking.git_commit(tmp_path)
    (tmp_path / "params.yaml").write_text("c")
    git("commit", "-qam", "code")
    assert tracking.git_commit(tmp_path, code_only=True) == tracking.git_commit(tmp_path) != code


def test_a_queued_experiments_copy_logs_into_the_workspace_store(tmp_path, monkeypatch):
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(copy)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve().as_posix()}/mlflow.db"
    assert tracking.artifact_root() == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_a_run_opened_in_the_background_logs_what_a_run_opened_at_once_does(mlflow_db):
    t = tracking.Tracker("baseline", {"baseline": {"lr": 0.001}}, {"advgame.input_hash": "abc"}, background=True)
    for step, loss in enumerate([0.9, 0.5]):
        t.log_metrics({"loss": loss}, step=step)  # the first call waits for the run
    t.finish()
    run = mlflow_db.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"baseline.lr": "0.001"}
    assert run.data.tags["advgame.input_hash"] == "abc" and run.data.tags["mlflow.parentRunId"] == t.parent_id
    assert [m.value for m in mlflow_db.get_metric_history(t.run_id, "loss")] == [0.9, 0.5]


def test_a_background_open_still_stops_at_once_on_a_server_that_does_not_answer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(UserError) as e:
        tracking.Tracker("baseline", {}, {}, background=True)  # before any work: no thread started
    assert "unreachable" in str(e.value) and "127.0.0.1:9" in str(e.value) and "\n" not in str(e.value)


def test_a_background_open_that_fails_stops_the_stage_at_its_first_log_in_one_line(mlflow_db, monkeypatch):
    def refuse(root=None):
        raise UserError("MLflow tracking at x is unreachable (refused)")

    monkeypatch.setattr(tracking, "connect", refuse)
    t = tracking.Tracker("baseline", {}, {}, background=True)
    with pytest.raises(UserError, match="unreachable"):
        t.log_metrics({"loss": 1.0}, step=0)
    t.finish(ok=False)  # the stage's error handler: never raises, nothing to close
    assert t.run_id is None
