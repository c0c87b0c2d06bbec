"""Evaluating a model outside the study (issue 32): advgame.evaluate_model and `advgame evaluate`
(evaluation/own_model.py, report/leaderboard.py, cli.py), with reduced attack settings."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from advgame import cli, config, evaluate_model
from advgame.artifacts import save_checkpoint, save_torch
from advgame.models import classifier_meta
from test_docs import undocumented

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # trace, load: deprecated in torch 2.14
ROOT = Path(__file__).resolve().parents[1]
FAST = {"run": {"threads": 1},  # the command sets torch's threads as a stage does: conftest's 1
        "eval": {"pgd_steps": 3, "apgd_iters": 3, "square_queries": 10, "strong_attacks": ["apgd-ce", "square"]}}
N = 40


@pytest.fixture(scope="module")
def own(trained_smallcnn):
    model, x, y = trained_smallcnn
    return model, x[:N].clone(), y[:N].clone()


@pytest.fixture(scope="module")
def row(own):
    model, x, y = own
    return evaluate_model(model, x, y, 0.3, etas=[0.1], params=config.parse(FAST), name="mine", show_progress=False)


@pytest.fixture
def files(own, tmp_path):
    """A checkpoint, a plain state_dict, a TorchScript file, a data file and a params file."""
    model, x, y = own
    save_checkpoint(model, classifier_meta("smallcnn", x.shape, 10), tmp_path / "ckpt.pt")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    torch.jit.trace(model.eval(), x[:2]).save(str(tmp_path / "ts.pt"))
    save_torch({"x": x, "y": y}, tmp_path / "data.pt")
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(FAST))
    return tmp_path


def run(files, *args, results="none.json"):
    return cli.main(["evaluate", *map(str, args), "--data", str(files / "data.pt"), "--params",
                     str(files / "fast.yaml"), "--results", str(files / results)])


def test_the_row_has_the_schema_of_a_pipeline_evaluation(row):
    ev = {k: v for k, v in row.items() if k != "seconds"}
    assert undocumented(ev, "reports/eval/<defender>.json") == []
    assert undocumented({"defenders": {"baseline": ev}}, "reports/results.json") == []
    assert row["seconds"] > 0  # its wall time: this file is no committed result
    assert row["defender"] == "mine" and row["settings"]["n_test"] == N
    assert set(row["results"]) == {"clean", "fgsm-curr", "pgd-curr", "apgd-ce", "square", "worst-case"}
    assert row["settings"]["attacks_by_eta"] == {"0.1": ["fgsm-curr", "pgd-curr"],
                                                 "0.3": ["fgsm-curr", "pgd-curr", "apgd-ce", "square"],
                                                 "1.0": ["pgd-curr"]}
    assert row["sanity"]["error_grows_to_one"] is True


def test_worst_case_is_at_least_every_attack(row):
    for key, worst in row["results"]["worst-case"].items():
        for attack, cells in row["results"].items():
            if key in cells:
                assert worst["error"] >= cells[key]["error"], (attack, key)
    assert row["results"]["worst-case"]["0.3"]["error"] > row["results"]["clean"]["0"]["error"]


class FixedLabel(nn.Module):
    """Predicts class `c` whatever the image (the input still flows into the logits)."""

    def __init__(self, c: int):
        super().__init__()
        self.c = c

    def forward(self, x):
        return 5 * nn.functional.one_hot(torch.full((len(x),), self.c), 10).float() + 0 * x.flatten(1).sum(1, True)


def test_a_model_that_ignores_the_image_has_error_one_minus_accuracy(own):
    _, x, y = own
    out = evaluate_model(FixedLabel(int(y[0])), x, y, 0.3, params=config.parse(FAST), show_progress=False)
    err = round(1 - (y == y[0]).float().mean().item(), 6)
    assert {a: c["0" if a == "clean" else "0.3"]["error"] for a, c in out["results"].items()} == \
        dict.fromkeys(out["results"], err)


def test_command_on_a_checkpoint_writes_the_json_and_the_leaderboard(files, row, capsys, monkeypatch):
    study = {"defenders": {name: {**row, "results": {a: {k: {**c, "error": e} for k, c in cells.items()}
                                                     for a, cells in row["results"].items()}}
                           for name, e in (("fragile", 1.0), ("robust", 0.01))}}
    (files / "results.json").write_text(json.dumps(study))
    monkeypatch.chdir(files)
    assert run(files, "ckpt.pt", "--name", "mine", "--etas", "0.1", results="results.json") == 0
    out = capsys.readouterr().out
    written = json.loads((files / "reports/own/mine.json").read_text())
    assert written["results"] == row["results"] and "wrote reports/own/mine.json" in out
    table = [line for line in out.splitlines() if line.startswith(("  robust", "  fragile", "* mine"))]
    mine_first = row["results"]["worst-case"]["0.3"]["error"] < 1.0  # a tie keeps the study's row first
    assert [line.split()[0] for line in table] == ["robust", *(["*", "fragile"] if mine_first else ["fragile", "*"])]
    assert "0.010 [" in table[0] and "apgd-ce" in out and "worst-case" in out
    # a cascade column counts the attacks to its left: its header says so
    assert "apgd-ce+" in out and "+: the AutoAttack cascade" in out and "fgsm-curr+" not in out


@pytest.mark.parametrize("model, arch", [("ts.pt", None), ("plain.pt", "smallcnn")])
def test_command_on_torchscript_and_a_plain_state_dict(files, row, model, arch, tmp_path):
    extra = ["--arch", arch] if arch else []
    assert run(files, files / model, *extra, "--out", tmp_path / "o.json", "--etas", "0.1") == 0
    res = json.loads((tmp_path / "o.json").read_text())["results"]
    assert res.keys() == row["results"].keys() and res["clean"] == row["results"]["clean"]


def test_python_m_advgame_cli_runs(files):
    r = subprocess.run([sys.executable, "-m", "advgame.cli", "evaluate", "ts.pt", "--data", "data.pt", "--params",
                        "fast.yaml", "--n", "10", "--out", "o.json"], cwd=files, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "* ts (yours)" in r.stdout and json.loads((files / "o.json").read_text())["settings"]["n_test"] == 10


class NotLogits(nn.Module):
    def forward(self, x):
        return x.flatten(1).sum(1)


@pytest.mark.parametrize("case, args, says", [
    ("unreadable", ["broken.pt"], "cannot be read"),
    ("unreadable-arch", ["broken.pt", "--arch", "smallcnn"], "cannot be read"),
    ("unknown arch", ["plain.pt", "--arch", "vgg99"], "unknown architecture 'vgg99'"),
    ("wrong arch", ["plain.pt", "--arch", "cifarcnn"], "does not fit --arch cifarcnn"),
    ("shape", ["ckpt.pt", "--data", "small.pt"], "does not accept images of shape [1, 20, 20]"),
    ("not logits", ["notlogits.pt"], "must return logits of shape (N, classes)"),
    ("pixels", ["ckpt.pt", "--data", "bright.pt"], "pixels must be floats in [0, 1]"),
    ("float labels", ["ckpt.pt", "--data", "floaty.pt"], "labels y must be integer class indices"),
    ("eval folder", ["ckpt.pt", "--out", "reports/eval/x.json"], "reports/eval/ holds the pipeline's"),
])
def test_clear_errors_exit_2_with_one_line(files, own, capsys, monkeypatch, case, args, says):
    _, x, y = own
    (files / "broken.pt").write_bytes((files / "ckpt.pt").read_bytes()[:300])
    save_torch({"x": x[:, :, :20, :20].clone(), "y": y}, files / "small.pt")
    save_torch({"x": x * 255, "y": y}, files / "bright.pt")
    save_torch({"x": x, "y": y.float()}, files / "floaty.pt")
    torch.jit.trace(NotLogits(), x[:2]).save(str(files / "notlogits.pt"))
    monkeypatch.chdir(files)
    data = [] if "--data" in args else ["--data", "data.pt"]
    assert cli.main(["evaluate", *args, *data, "--params", "fast.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error [evaluate]: ") and says in err, err


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0 and f"usage: advgame {command}" in capsys.readouterr().out


def test_an_unknown_command_names_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evalute"])
    assert e.value.code == 2 and "choose from" in capsys.readouterr().err


def test_the_console_script_is_registered_and_import_advgame_stays_torch_free():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"advgame": "advgame.cli:main"}
    code = ("import sys, advgame; assert 'torch' not in sys.modules; "
            "assert advgame.evaluate_model.__module__ == 'advgame.evaluation.own_model'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_progress_total_counts_every_run_the_evaluation_announces(trained_smallcnn):
    from advgame.attacks.target import Defender
    from advgame.evaluation.crosseval import Plan, evaluate_defender
    from advgame.evaluation.own_model import _steps

    model, x, y = trained_smallcnn
    plan = Plan(etas=[0.1, 0.3], main_eta=0.3, pgd_steps=3, apgd_iters=3, square_queries=5, fab_iters=3,
                fab_targets=1, apgd_targets=1, strong_attacks=["apgd-ce", "apgd-t", "fab-t", "square"],
                saturation_n=10, sanity_eta=1.0)
    said = []
    evaluate_defender(Defender("m", model, model), x[:30], y[:30], plan, progress=said.append)
    assert _steps(Defender("m", model, model), plan) == sum(m.startswith("eta ") for m in said)  # sanity run included
