"""End to end against a team server: PostgreSQL (pgserver) + `mlflow server` on 127.0.0.1 with
its own artifact store, started on free ports; two tiny stages (prepare, baseline) of a temporary
project log into it via MLFLOW_TRACKING_URI, the defender is registered, and a logged model's
artifacts are read back through the server from another working directory. Stops what it starts."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("pgserver", reason="the team extra (pip install -e '.[team]') ships PostgreSQL")
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
TINY = {"study": {"defenders": ["baseline"]}, "run": {"device": "cpu", "threads": 1},
        "data": {"test_fraction": 0.04, "train_n": 200, "val_n": 100}, "baseline": {"epochs": 2, "batch": 64, "lr": 0.002}}
REGISTER = """
from advgame import config
from advgame.pipeline import tracking
t = tracking.Tracker("report", {}, {})
print(t.register_defenders(config.load("params.yaml")))
t.finish()
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from advgame.pipeline import server as team_server

    folder = tmp_path_factory.mktemp("srv")
    srv = team_server.start(folder, log=folder / "server.log")
    yield srv, folder
    srv.stop()
    assert srv.proc.poll() is not None


def test_stages_log_into_the_postgres_server(server, tmp_path_factory, warm_server):
    import mlflow

    srv, folder = server
    d = tmp_path_factory.mktemp("proj")
    shutil.copytree(ROOT / "stages", d / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    from advgame import config

    (d / "params.yaml").write_text(yaml.safe_dump(config.parse(TINY).model_dump(), sort_keys=False))
    env = {**os.environ, "ADVGAME_TRACKING": "on", "MLFLOW_TRACKING_URI": srv.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *sys.path[1:]]),
           "ADVGAME_PIPELINE_ID": "server-e2e"}
    for cmd in (["stages/prepare.py", "--out", "data/prepared"],  # started warm, as `make study` starts them
                ["stages/baseline.py", "--data", "data/prepared", "--out", "models/baseline.pt"]):
        r = subprocess.run(["python", *cmd], cwd=d, env=warm_server.env(env), capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    # the report stage's registration (its eval JSON written here: the eval stage is not the point)
    cell = lambda e: {"error": e, "ci95": [0, 1], "n": 10}  # noqa: E731
    (d / "reports/eval").mkdir(parents=True)
    (d / "reports/eval/baseline.json").write_text(json.dumps({"defender": "baseline", "results": {
        "clean": {"0": cell(0.05)}, "worst-case": {"0.3": cell(1.0)}, "pgd-curr": {"0.3": cell(0.99)}}}))
    # the headline stage's row, which the registry's tags read (before the report stage registers)
    (d / "reports/metrics.json").write_text(json.dumps({"baseline": {"clean": 0.05, "worst_case": 1.0,
                                                                     "pgd_curr": 0.99}}))
    r = subprocess.run([sys.executable, "-c", REGISTER], cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "{'baseline': '1'}" in r.stdout, r.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_uri=srv.url)
    exp = client.get_experiment_by_name("advgame")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server decides, not the client
    runs = client.search_runs([exp.experiment_id], "")
    by_stage = {r.data.tags["advgame.stage"]: r for r in runs}
    assert set(by_stage) == {"pipeline", "prepare", "baseline", "report"}
    parent = by_stage["pipeline"]
    assert parent.info.status == "FINISHED" and parent.data.params["baseline.epochs"] == "2"
    for s in ("prepare", "baseline", "report"):
        assert by_stage[s].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert by_stage[s].info.status == "FINISHED"
    base = by_stage["baseline"]
    assert 0 <= base.data.metrics["clean_error"] < 1
    assert len(client.get_metric_history(base.info.run_id, "train_loss")) == 2
    assert {i.dataset.name for i in base.inputs.dataset_inputs} == {"mnist5k-train", "mnist5k-test"}
    (logged,) = client.search_logged_models([exp.experiment_id], filter_string="name = 'baseline'")
    assert logged.source_run_id == base.info.run_id
    mv = client.get_model_version_by_alias("advgame-baseline", "study")
    assert mv.version == "1" and mv.tags["eval.clean"] == "0.05"

    # another working directory, only the server's URL: the model's files come through HTTP
    elsewhere = tmp_path_factory.mktemp("colleague")
    got = subprocess.run([sys.executable, "-c", (
        "import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); "
        "p = mlflow.artifacts.download_artifacts('models:/advgame-baseline@study', dst_path='dl'); "
        "m = mlflow.models.get_model_info('models:/advgame-baseline@study'); "
        "print(p, m.signature.inputs.to_dict()[0]['tensor-spec']['shape'])"), srv.url],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr[-3000:]
    assert (elsewhere / "dl" / "MLmodel").exists() and "[-1, 1, 28, 28]" in got.stdout.replace("(", "[").replace(")", "]")
    assert not (d / "mlartifacts").exists() and not (elsewhere / "mlartifacts").exists()
    assert list((folder / "artifacts").rglob("MLmodel"))  # stored by the server, in its folder
