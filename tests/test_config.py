"""params.yaml validation: every mistake a user can make ends in one line naming the key."""
import copy
from pathlib import Path

import pytest
import yaml

from advgame import UserError, config
from advgame.pipeline.stage import run_stage

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def error_for(change) -> str:
    raw = copy.deepcopy(DEFAULT)
    change(raw)
    with pytest.raises(UserError) as e:
        config.parse(raw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_default_params_parse():
    p = config.load(ROOT / "params.yaml")
    assert p.data.dataset == "mnist5k"
    assert p.attack.eta == DEFAULT["attack"]["eta"]
    assert p.eval.etas == DEFAULT["eval"]["etas"]
    assert config.classifier_arch(p) == "smallcnn"


def test_unknown_key_names_key_and_allowed_keys():
    msg = error_for(lambda r: r.update(baseline={"epoch": 3}))
    assert "baseline.epoch" in msg and "unknown" in msg
    assert "epochs" in msg and "lr" in msg  # the keys that are allowed


def test_unknown_section():
    msg = error_for(lambda r: r.update(basline={"epochs": 3}))
    assert "basline" in msg and "baseline" in msg


def test_wrong_type():
    msg = error_for(lambda r: r["baseline"].update(epochs="x"))
    assert "baseline.epochs" in msg and "integer" in msg and "'x'" in msg


@pytest.mark.parametrize("eta, bound", [(0, "greater than 0"), (1.5, "less than or equal to 1")])
def test_eta_out_of_range(eta, bound):
    msg = error_for(lambda r: r["attack"].update(eta=eta))
    assert "attack.eta" in msg and bound in msg


def test_epochs_zero():
    msg = error_for(lambda r: r["baseline"].update(epochs=0))
    assert "baseline.epochs" in msg and "greater than or equal to 1" in msg


def test_eval_etas_out_of_range():
    msg = error_for(lambda r: r["eval"].update(etas=[0.3, 2]))
    assert "eval.etas" in msg and "0 < eta <= 1" in msg


def test_strong_attacks_and_etas_validated():
    msg = error_for(lambda r: r["eval"].update(strong_attacks=["apgd-ce", "fab"]))
    assert "eval.strong_attacks" in msg and all(a in msg for a in ("apgd-ce", "apgd-dlr", "apgd-t", "square"))
    msg = error_for(lambda r: r["eval"].update(strong_etas=[1.5]))
    assert "eval.strong_etas" in msg and "0 < eta <= 1" in msg
    msg = error_for(lambda r: r["eval"].update(apgd_iters=0))
    assert "eval.apgd_iters" in msg and "APGD iterations" in msg


def test_unknown_dataset_lists_datasets():
    msg = error_for(lambda r: r["data"].update(dataset="imagenet"))
    assert "data.dataset" in msg and "imagenet" in msg
    assert all(d in msg for d in ("mnist5k", "mnist", "cifar10"))


def test_unknown_classifier_arch_lists_archs():
    msg = error_for(lambda r: r["classifier"].update(arch="vgg"))
    assert "classifier.arch" in msg and "vgg" in msg
    assert all(a in msg for a in ("smallcnn", "cifarcnn"))


def test_unknown_attacker_arch_in_list():
    msg = error_for(lambda r: r["attacker"].update(archs=["mlp", "gan"]))
    assert "attacker.archs" in msg and "unet" in msg


def test_load_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        config.load(tmp_path / "params.yaml")


def test_load_invalid_yaml(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("baseline: {epochs: 3\nattack: [\n")
    with pytest.raises(UserError, match="not valid YAML") as e:
        config.load(f)
    assert "\n" not in str(e.value)


def test_load_names_the_file(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("attack: {eta: 2}\n")
    with pytest.raises(UserError, match="my.yaml"):
        config.load(f)


def test_eta_key():
    assert config.eta_key(0.3) == "0.3"
    assert config.eta_key(0.1) == "0.1"
    assert config.eta_key(0) == "0"


def test_run_stage_bad_params_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("baseline: {epoch: 3}\n")
    monkeypatch.chdir(tmp_path)
    called = []
    with pytest.raises(SystemExit) as e:
        run_stage("baseline", lambda ctx: called.append(1), sections=["run", "baseline"])
    assert e.value.code == 2
    assert not called
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "baseline.epoch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_run_stage_user_error_in_body_writes_no_report(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("attack: {eta: 0.3}\n")
    monkeypatch.chdir(tmp_path)

    def body(ctx):
        raise UserError("data/prepared/train.pt: not found")

    with pytest.raises(SystemExit) as e:
        run_stage("baseline", body, sections=["run"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "error [baseline]: data/prepared/train.pt: not found"
    assert not (tmp_path / "reports").exists()


def test_run_stage_writes_report(tmp_path, monkeypatch):
    (tmp_path / "params.yaml").write_text("attack: {eta: 0.3}\n")
    monkeypatch.chdir(tmp_path)
    run_stage("demo", lambda ctx: {"clean_error": 0.25, "eta": ctx.params.attack.eta, "seconds_pgd": 1.5,
                                   "attack_seconds": 2.0}, sections=["run", "attack"])
    rep = yaml.safe_load((tmp_path / "reports/stages/demo.json").read_text())
    assert rep["stage"] == "demo" and rep["clean_error"] == 0.25 and rep["eta"] == 0.3
    # the committed report holds no wall-clock figure; the untracked timing file holds them all
    assert not [k for k in rep if "seconds" in k]
    timing = yaml.safe_load((tmp_path / "reports/timing/demo.json").read_text())
    assert timing["seconds_pgd"] == 1.5 and timing["attack_seconds"] == 2.0
    took = timing["seconds"]  # the stage's duration (a value, not a timing check)
    assert isinstance(took, float) and took >= 0


@pytest.mark.parametrize("section, key", [("baseline", "epochs"), ("attack", "eta")])
def test_boolean_for_a_number_is_rejected(section, key):
    msg = error_for(lambda r: r[section].update({key: True}))
    assert f"{section}.{key}" in msg


def test_yaml_float_strings_still_parse():
    # PyYAML reads `lr: 1e-3` as the string "1e-3": a fix for the bug above must keep accepting it
    assert config.parse(yaml.safe_load("baseline: {lr: 1e-3}")).baseline.lr == 0.001


@pytest.mark.parametrize("text, line, column", [
    ("run:\n  seed: [1\ndata: {}\n", 3, 5),     # an unclosed list
    ("run: seed: 1\n", 1, 10),                   # a mapping value on one line
    ("run:\n\tseed: 1\n", 2, 1),                 # a tab
])
def test_yaml_error_names_line_and_column(tmp_path, text, line, column):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError) as e:
        config.load(tmp_path / "params.yaml")
    msg = str(e.value)
    assert f"line {line}, column {column}" in msg and "params.yaml" in msg and "\n" not in msg


def test_params_file_must_be_a_mapping(tmp_path):
    (tmp_path / "params.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a mapping of sections"):
        config.load(tmp_path / "params.yaml")


@pytest.mark.parametrize("root", ["../escape", "data/../../escape", "../../etc"])
def test_data_root_may_not_leave_the_project(root):
    msg = error_for(lambda r: r["data"].update({"root": root}))
    assert "data.root" in msg and "inside the project" in msg and "absolute" in msg


@pytest.mark.parametrize("root", ["data/raw", "/srv/datasets", "cache/mnist"])
def test_data_root_inside_or_absolute_is_allowed(root):
    raw = copy.deepcopy(DEFAULT)
    raw["data"]["root"] = root
    assert config.parse(raw).data.root == root


def test_adaptive_params_validated():
    msg = error_for(lambda r: r["eval"].update(adaptive_weights=[10.0, 0.0]))
    assert "eval.adaptive_weights" in msg
    assert "eval.adaptive_weights" in error_for(lambda r: r["eval"].update(adaptive_weights=[]))
    assert "eval.adaptive_starts" in error_for(lambda r: r["eval"].update(adaptive_starts=-1))
