"""The defense registry is the one table of defenses: params validation, the generator, the
stage scripts' choices, load_defender and the report's descriptions read it."""
from pathlib import Path

import pytest
import torch
import yaml

from advgame import UserError, config
from advgame import defense_table as registry
from advgame.artifacts import save_checkpoint
from advgame.defenses import loading as defenders
from advgame.models import SmallCNN, classifier_meta
from advgame.pipeline import generator as pipeline
from advgame.pipeline.stage import input_paths

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_params_accept_exactly_the_registered_defenders():
    assert config.DEFENDERS == registry.NAMES
    with pytest.raises(UserError, match="allowed values: baseline, catmouse"):
        config.parse({"study": {"defenders": ["baseline", "not-a-defense"]}})


@pytest.mark.parametrize("d", registry.DEFENSES, ids=lambda d: d.name)
def test_each_entry_is_complete(d):
    assert (ROOT / d.script).is_file()
    # its section is validated by the class the entry names
    assert isinstance(getattr(config.Params(), d.section), getattr(config, d.params_model))
    assert d.kind in defenders.LOADERS
    assert all(u in registry.NAMES for u in d.upstream)
    text = registry.describe(d.name)
    assert text.startswith(f"{d.name} ({d.paper}): ") and len(text.splitlines()) == 1


def test_every_defense_is_built_by_its_registered_script():
    st = pipeline.stages(config.parse(RAW))
    for d in registry.DEFENSES:
        name = "round-1" if d.family == "rounds" else d.name
        assert st[name]["cmd"].split()[1] == d.script
        assert all(f"--{a}" not in d.args or a in st[name]["cmd"] for a in ("defense", "method", "mode"))
        if d.section and d.family != "rounds" and d.family != "game":
            assert d.section in st[name]["params"]


def test_stage_scripts_take_their_choices_from_the_registry():
    assert registry.names_for("stages/field.py") == ("pgd-at", "trades", "fgsm-rs")
    assert registry.names_for("stages/fgsm_training.py") == ("fgsm-at", "sens-fgsm")
    assert set(registry.names_for("stages/game.py")) == {"alt", "minimax", "maximin"}


def test_describe_names_paper_and_objective():
    assert registry.describe("pgd-at").startswith("pgd-at (Madry et al. 2018): cross-entropy on the PGD")
    assert "cat-and-mouse" in registry.describe("adv-fgsm-10")
    with pytest.raises(KeyError, match="unknown defense 'nope'"):
        registry.describe("nope")


def test_load_defender_picks_the_loader_by_checkpoint_kind(tmp_path):
    torch.manual_seed(0)
    meta = classifier_meta("smallcnn", (1, 1, 28, 28), 10, defender="baseline")
    save_checkpoint(SmallCNN(), meta, tmp_path / "a.pt")
    d = defenders.load_defender("baseline", str(tmp_path / "a.pt"))
    assert d.model is d.classifier and d.reject is None
    save_checkpoint(SmallCNN(), {**meta, "kind": "hologram"}, tmp_path / "b.pt")
    with pytest.raises(UserError, match="kind 'hologram'"):
        defenders.load_defender("x", str(tmp_path / "b.pt"))


def test_input_hash_covers_the_inputs_named_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for f in ("data", "models/baseline.pt", "models/adv-fgsm-1.pt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x") if f != "data" else (tmp_path / f).mkdir()
    argv = ["--defender", "baseline", "--data", "data", "--fgsm-sources", "1=models/baseline.pt,2=models/adv-fgsm-1.pt",
            "--out", "reports/eval/baseline.json", "--out-json=models/baseline.pt", "--k", "1"]
    assert input_paths(argv) == ["data", "models/baseline.pt", "models/adv-fgsm-1.pt"]


def test_the_prepared_data_path_is_defined_once():
    # the generator writes it into each stage's cmd; stages read it from argv (the report
    # helper's report.py and stages/report.py are theirs to change)
    theirs = {"src/advgame/report.py", "stages/report.py"}
    hits = [f"{f.relative_to(ROOT)}:{i}" for d in ("src", "stages") for f in sorted((ROOT / d).rglob("*.py"))
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if "data/prepared" in line and str(f.relative_to(ROOT)) not in theirs]
    assert hits == ["src/advgame/names.py:" + str(next(
        i for i, line in enumerate((ROOT / "src/advgame/names.py").read_text().splitlines(), 1)
        if line.startswith('DATA = "data/prepared"')))], hits
