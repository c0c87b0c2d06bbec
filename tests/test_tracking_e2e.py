"""End to end through DVC: the pipeline's parent MLflow run is RUNNING while a stage runs and
FINISHED or FAILED at the end, holds the params and the headline metrics; child runs of a
`dvc exp run` carry the experiment's name; two queued experiments (`dvc exp run --queue`,
`dvc queue start`) log into the workspace's own store (not their temporary copies'), each with
its name and params. One tiny project (prepare -> baseline -> probe, a hand-written dvc.yaml)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {"run": {"device": "cpu", "threads": 1}, "data": {"test_fraction": 0.04, "train_n": 200, "val_n": 100},
        "baseline": {"epochs": 1, "batch": 64, "lr": 0.002}}

# a stage that looks at its own pipeline run while it runs, and puts a headline metric on it
PROBE = '''
import json, os
from advgame import UserError
from advgame.pipeline.stage import run_stage

def body(ctx):
    t = ctx.tracker
    status = t.client.get_run(t.parent_id).info.status
    json.dump({"parent_status_during": status}, open("probe.json", "w"))
    clean = json.load(open("reports/stages/baseline.json"))["clean_error"]
    t.log_parent_metrics({"baseline.clean": clean})
    if os.environ.get("PROBE_FAIL"):
        raise UserError("probe failed on purpose")
    return {}

run_stage("probe", body, sections=["run"])
'''
DVC_YAML = {"stages": {
    "prepare": {"cmd": "python stages/prepare.py --out data/prepared", "deps": ["stages/prepare.py"], "params": ["data"],
                "outs": ["data/prepared"]},
    "baseline": {"cmd": "python stages/baseline.py --data data/prepared --out models/baseline.pt", "deps": ["stages/baseline.py", "data/prepared"],
                 "params": ["baseline"], "outs": ["models/baseline.pt"]},
    "probe": {"cmd": "python stages/probe.py", "deps": ["stages/probe.py", "models/baseline.pt"],
              "outs": [{"probe.json": {"cache": False}}]},
}}


def sh(*cmd, cwd, env, ok=True):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def project(tmp_path_factory, warm_server):
    d = tmp_path_factory.mktemp("proj")
    (d / "stages").mkdir()
    for s in ("prepare.py", "baseline.py"):
        shutil.copy(ROOT / "stages" / s, d / "stages" / s)
    (d / "stages/probe.py").write_text(PROBE)
    from advgame import config

    (d / "params.yaml").write_text(yaml.safe_dump(config.parse(TINY).model_dump(), sort_keys=False))
    (d / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (d / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    # the stages start warm (conftest.warm_server), the queued experiments' too, in their copies
    env = warm_server.env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ADVGAME_TRACKING": "on",
                           "PYTHONPATH": str(ROOT / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
                           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: <workspace>/mlflow.db
    env.pop("ADVGAME_PIPELINE_ID", None)
    sh("git", "init", "-q", cwd=d, env=env)
    sh("dvc", "init", "-q", cwd=d, env=env)
    sh("git", "add", "-A", cwd=d, env=env)
    sh("git", "commit", "-qm", "init", cwd=d, env=env)
    return d, env


def client_of(d):
    import mlflow

    c = mlflow.MlflowClient(tracking_uri=f"sqlite:///{d}/mlflow.db")
    return c, c.get_experiment_by_name("advgame").experiment_id


def runs_of_exp(c, exp_id, name):
    return c.search_runs([exp_id], f"tags.`advgame.dvc_exp` = '{name}'")


def test_parent_run_status_params_metrics_and_exp_name(project):
    d, env = project
    sh("dvc", "exp", "run", "-n", "exp-a", "-S", "baseline.epochs=2", cwd=d, env=env)
    assert json.loads((d / "probe.json").read_text()) == {"parent_status_during": "RUNNING"}
    c, exp_id = client_of(d)
    runs = runs_of_exp(c, exp_id, "exp-a")
    by_stage = {r.data.tags["advgame.stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", "prepare", "baseline", "probe"}
    parent = by_stage["pipeline"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["baseline.epochs"] == "2" and parent.data.params["data.train_n"] == "200"
    clean = json.loads((d / "reports/stages/baseline.json").read_text())["clean_error"]
    assert parent.data.metrics == {"baseline.clean": clean}
    for s in ("prepare", "baseline", "probe"):
        assert by_stage[s].data.tags["mlflow.parentRunId"] == parent.info.run_id

    r = sh("dvc", "exp", "run", "-n", "exp-fail", "-f", "-s", "probe", cwd=d,
           env={**env, "PROBE_FAIL": "1"}, ok=False)
    assert r.returncode != 0 and "probe failed on purpose" in r.stderr
    (failed,) = [x for x in runs_of_exp(c, exp_id, "exp-fail") if x.data.tags["advgame.stage"] == "pipeline"]
    assert failed.info.status == "FAILED"
    assert not c.search_runs([exp_id], "attributes.status = 'RUNNING'")


def test_queued_experiments_land_in_the_workspace_store(project):
    d, env = project
    for name, epochs in (("q-one", 1), ("q-two", 3)):
        sh("dvc", "exp", "run", "--queue", "-n", name, "-S", f"baseline.epochs={epochs}", cwd=d, env=env)
    sh("dvc", "queue", "start", "-j", "1", cwd=d, env=env)
    deadline = time.monotonic() + 800
    while time.monotonic() < deadline:
        status = sh("dvc", "queue", "status", cwd=d, env=env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    sh("dvc", "queue", "stop", cwd=d, env=env, ok=False)
    assert status.count("Success") >= 2, status
    c, exp_id = client_of(d)
    for name, epochs in (("q-one", "1"), ("q-two", "3")):
        runs = runs_of_exp(c, exp_id, name)
        by_stage = {r.data.tags["advgame.stage"]: r for r in runs}
        assert {"pipeline", "baseline"} <= set(by_stage), (name, set(by_stage))
        assert by_stage["pipeline"].data.params["baseline.epochs"] == epochs
        assert by_stage["baseline"].data.params["baseline.epochs"] == epochs
        assert by_stage["pipeline"].info.status == "FINISHED"
    assert not list((d / ".dvc/tmp").rglob("mlflow.db"))  # no store in a temporary copy
