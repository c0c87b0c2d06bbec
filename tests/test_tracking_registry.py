"""The model registry and dataset inputs: each final defender registered as advgame-<defender>
with a signature, an input example, its eval metrics on the version and the alias `study`; a
rerun of the registration adds no version; the prepared split is a dataset input of the run."""
import json
from pathlib import Path

import pytest
import torch

from advgame import config, names
from advgame.pipeline import mlflow_registry as model_registry
from advgame.pipeline import tracking


@pytest.fixture
def store(tmp_path, monkeypatch, request):
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ADVGAME_TRACKING", "on")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("ADVGAME_PIPELINE_ID", request.node.name)
    yield mlflow.MlflowClient(tracking_uri=uri)
    mlflow.set_tracking_uri(None)


def _eval_json(defender, clean, worst, pgd):
    """The defender's evaluation and its row of reports/metrics.json (the headline stage's)."""
    cell = lambda e: {"error": e, "ci95": [0, 1], "n": 10}  # noqa: E731
    res = {"clean": {"0": cell(clean)}, "worst-case": {"0.1": cell(0.9), "0.3": cell(worst)},
           "pgd-curr": {"0.3": cell(pgd)}}
    p = Path("reports/eval") / f"{defender}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"defender": defender, "results": res}))
    m = Path("reports/metrics.json")
    rows = json.loads(m.read_text()) if m.exists() else {}
    rows[defender] = {"clean": clean, "worst_case": worst, "pgd_curr": pgd, "attnet_curr": 0.5}
    m.write_text(json.dumps(rows))


def test_registered_name():
    assert names.registered_model("fgsm-at") == "advgame-fgsm-at"


def test_every_final_defender_is_registered_with_alias_metrics_and_signature(store):
    import mlflow

    params = config.parse({"study": {"defenders": ["baseline", "minimax"]}})
    x = torch.rand(4, 1, 28, 28)
    for d in ("baseline", "minimax"):
        t = tracking.Tracker(d, {}, {})
        t.log_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), d, x)
        t.finish()
    _eval_json("baseline", 0.03, 1.0, 0.99)
    _eval_json("minimax", 0.02, 0.5, 0.4)
    rep = tracking.Tracker("report", {}, {})
    assert rep.register_defenders(params) == {"baseline": "1", "minimax": "1"}
    assert rep.register_defenders(params) == {"baseline": "1", "minimax": "1"}  # no new version
    rep.finish()
    assert rep.error is None
    names = sorted(m.name for m in store.search_registered_models())
    assert names == ["advgame-baseline", "advgame-minimax"]
    mv = store.get_model_version_by_alias("advgame-minimax", "study")
    assert mv.tags["eval.clean"] == "0.02" and mv.tags["eval.worst_case"] == "0.5"
    assert mv.tags["eval.pgd_curr"] == "0.4" and mv.tags["eval.eta"] == "0.3"
    info = mlflow.models.get_model_info("models:/advgame-minimax@study")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 28, 28)
    logged = store.get_logged_model(mv.source.removeprefix("models:/"))
    assert logged.name == "minimax" and {m.key for m in logged.metrics} >= {"minimax.clean"}


def test_a_defender_trained_without_tracking_is_named_not_registered(store, capsys):
    params = config.parse({"study": {"defenders": ["baseline"]}})
    rep = tracking.Tracker("report", {}, {})
    assert rep.register_defenders(params) == {}
    rep.finish()
    assert "no logged model for baseline" in capsys.readouterr().err


def test_eval_metrics_are_the_headline_rows(tmp_path, monkeypatch):
    # one value per quantity: the registry's tags are reports/metrics.json's (for MagNet, its
    # PGD-curr is pgd-adaptive there), not a second reading of the eval JSON
    monkeypatch.chdir(tmp_path)
    _eval_json("alt", 0.01, 0.7, 0.6)
    assert model_registry.eval_metrics("alt") == {"clean": 0.01, "worst_case": 0.7, "pgd_curr": 0.6}
    _eval_json("magnet", 0.04, 0.9, 0.85)
    ev = json.loads(Path("reports/eval/magnet.json").read_text())
    ev["results"]["pgd-curr"]["0.3"]["error"] = 0.2  # detector-blind PGD in the eval JSON
    Path("reports/eval/magnet.json").write_text(json.dumps(ev))
    assert model_registry.eval_metrics("magnet")["pgd_curr"] == 0.85


def test_the_prepared_split_is_a_dataset_input(store, tmp_path):
    meta = {"dataset": "mnist5k", "classes": 10, "train": {"shape": [300, 1, 28, 28], "sha256": "a" * 64},
            "test": {"shape": [100, 1, 28, 28], "sha256": "b" * 64}}
    Path("data/prepared").mkdir(parents=True)
    Path("data/prepared/meta.json").write_text(json.dumps(meta))
    (tmp_path / "params.yaml").write_text("{}\n")
    from advgame.pipeline.stage import run_stage

    run_stage("demo", lambda ctx: {}, sections=["run"], deps=["data/prepared"])
    exp = store.get_experiment_by_name(tracking.EXPERIMENT)
    (run,) = store.search_runs([exp.experiment_id], "tags.`advgame.stage` = 'demo'")
    got = {(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs}
    assert got == {("mnist5k-train", "a" * 36), ("mnist5k-test", "b" * 36)}
    src = json.loads(run.inputs.dataset_inputs[0].dataset.source)
    assert src["sha256"] in ("a" * 64, "b" * 64)


def test_a_newer_model_of_a_dvc_experiment_is_not_the_workspaces(store, monkeypatch):
    # `make seeds` logs its experiments' models into the same store, after the workspace's
    params = config.parse({"study": {"defenders": ["baseline"]}})
    x = torch.rand(4, 1, 28, 28)
    net = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))  # noqa: E731
    t = tracking.Tracker("baseline", {}, {})
    t.log_model(net(), "baseline", x)
    t.finish()
    _eval_json("baseline", 0.03, 1.0, 0.99)
    rep = tracking.Tracker("report", {}, {})
    assert rep.register_defenders(params) == {"baseline": "1"}
    rep.finish()
    ours = store.get_model_version_by_alias("advgame-baseline", "study").source
    monkeypatch.setenv("DVC_EXP_NAME", "other")  # an experiment that did not retrain: the workspace's
    rep = tracking.Tracker("report", {}, {})
    assert rep.register_defenders(params) == {"baseline": "1"}
    rep.finish()
    monkeypatch.setenv("DVC_EXP_NAME", "seed-1")
    t = tracking.Tracker("baseline", {}, {})
    t.log_model(net(), "baseline", x)
    t.finish()
    exp_rep = tracking.Tracker("report", {}, {})  # a report inside the experiment takes its own
    assert exp_rep.register_defenders(params) == {"baseline": "2"}
    exp_rep.finish()
    monkeypatch.delenv("DVC_EXP_NAME")
    rep = tracking.Tracker("report", {}, {})  # the workspace's report moves the alias back
    assert rep.register_defenders(params) == {"baseline": "1"}
    rep.finish()
    assert store.get_model_version_by_alias("advgame-baseline", "study").source == ours


def test_the_registered_magnet_is_the_whole_defense_with_its_detector(store):
    # the MagNet stage logs reformer + classifier + detector as one module (defenses.magnet.MagNet)
    import mlflow.pytorch

    from advgame.defenses.magnet import MagNet, Reformer, build_defender

    torch.manual_seed(0)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    ae = Reformer(1)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    x[:4] = 0.5  # a flat image: the untrained reformer reconstructs these better than the noise
    err = (x - ae(x)).abs().flatten(1).mean(1).detach()
    threshold = float(err.median())
    whole = MagNet(ae, clf, threshold).eval()
    t = tracking.Tracker("magnet", {}, {})
    t.log_model(whole, "magnet", x)
    t.finish()
    assert t.error is None
    _eval_json("magnet", 0.04, 0.9, 0.8)
    rep = tracking.Tracker("report", {}, {})
    params = config.parse({"study": {"defenders": ["baseline", "magnet"]}})
    assert rep.register_defenders(params) == {"magnet": "1"}  # the baseline was not logged here
    rep.finish()
    loaded = mlflow.pytorch.load_model("models:/advgame-magnet@study")
    with torch.no_grad():
        pred = loaded(x).argmax(1)
    d = build_defender("magnet", clf, ae, threshold, 1.0)
    wrong, rejected = d.outcome(x, y)
    assert 0 < int(rejected.sum()) < len(x)
    assert torch.equal(pred == 10, rejected)  # the last column: the detector's rejection
    assert torch.equal(pred != y, d.errors(x, y, clean=True))
