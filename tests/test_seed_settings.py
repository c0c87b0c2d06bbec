"""A seed counts only where everything its cells rest on is this study at another training seed:
the measured stage and every stage upstream of it ran the same command, code and params but
run.seed (seedscope.ran_otherwise), for an experiment here and for a seed kept from the file alike."""
from __future__ import annotations

import json

import pytest
import yaml
from test_seeds_merge import FILES, _workspace

from advgame import UserError, config
from advgame.pipeline import seeds, seedscope


def _stage(seed: int, deps=(), outs=(), cmd="python s.py", **params):
    return {"cmd": cmd, "deps": [{"path": d, "md5": f"{d}@{seed}"} for d in deps],
            "outs": [{"path": o, "md5": f"{o}@{seed}"} for o in outs],
            "params": {"params.yaml": {"run.seed": seed, **params}, "codehash.json": {"x.hash": "c1"}}}


def _study(seed: int, epochs: int = 12, check_code: str = "c1") -> dict:
    """check -> prepare -> train (epochs) -> eval-a; eval-b reads prepare only; `other` is beside."""
    check = _stage(seed, outs=["data/ok.json"])
    check["outs"][0]["md5"] = "same at every seed"
    check["params"]["codehash.json"]["x.hash"] = check_code
    return {"stages": {
        "check": check,
        "prepare": {**_stage(0, deps=["data/ok.json"], outs=["data/prepared"]), "params": {"params.yaml": {"data": {"n": 5}}}},
        "train": _stage(seed, deps=["data/prepared"], outs=["models/a.pt"], **{"train.epochs": epochs}),
        "eval-a": _stage(seed, deps=["data/prepared", "models/a.pt"], outs=["reports/eval/a.json"],
                         eval={"steps": 40}, run={"seed": seed, "threads": 2}),
        "eval-b": _stage(seed, deps=["data/prepared/x"], outs=["reports/eval/b.json"]),
        "other": _stage(seed, deps=["models/z.pt"], outs=["reports/z.json"])}}


def test_upstream_follows_outputs_into_dependencies_and_folders():
    ours = _study(0)
    assert seedscope.upstream(ours, "eval-a") == ["check", "eval-a", "prepare", "train"]
    assert seedscope.upstream(ours, "eval-b") == ["check", "eval-b", "prepare"]  # a file in a folder output


def test_another_training_seed_is_the_same_study_and_anything_else_upstream_is_not():
    ours = _study(0)
    assert seedscope.ran_otherwise(_study(4), ours, "eval-a") == []  # run.seed, in any form, aside
    assert seedscope.ran_otherwise(_study(4, epochs=20), ours, "eval-a") == ["train"]  # the training budget
    assert seedscope.ran_otherwise(_study(4, epochs=20), ours, "eval-b") == []  # b does not rest on train
    theirs = _study(4)
    theirs["stages"]["eval-a"]["params"]["params.yaml"]["eval"] = {"steps": 20}
    assert seedscope.ran_otherwise(theirs, ours, "eval-a") == ["eval-a"]  # the stage's own attack budget
    theirs = _study(4)
    theirs["stages"]["eval-a"]["params"]["params.yaml"]["run"]["threads"] = 1
    assert seedscope.ran_otherwise(theirs, ours, "eval-a") == ["eval-a"]  # 1 and 2 threads: other weights
    theirs = _study(4)
    theirs["stages"]["train"]["cmd"] = "python s.py --mode other"
    assert seedscope.ran_otherwise(theirs, ours, "eval-a") == ["train"]
    # other code that wrote the same bytes (a validation stage) changes nothing downstream
    assert seedscope.ran_otherwise(_study(4, check_code="c2"), ours, "eval-a") == []
    theirs = _study(4)
    del theirs["stages"]["train"]
    assert seedscope.ran_otherwise(theirs, ours, "eval-a") == ["train"]  # a stage it never ran


def test_an_experiment_trained_on_other_params_is_refused(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_study(0)))
    files = {"dvc.lock": _study(4, epochs=20), "params.yaml": {"run": {"seed": 4}}}
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: yaml.safe_dump(files[a[1].split(":")[1]]))
    with pytest.raises(UserError, match=r"other params or code .*\(train\)"):
        seeds.check_same_code("refs/exps/ab/cd/seed-4", 4, ["eval-a"])
    files["dvc.lock"] = _study(4)
    assert seeds.check_same_code("refs/exps/ab/cd/seed-4", 4, ["eval-a"]) == _study(4)


def test_a_kept_seed_counts_while_its_baseline_commit_ran_these_params(tmp_path, monkeypatch):
    ours = seeds.code_md5({"stages": {"eval-a": {"params": {"codehash.json": {"evaluate.hash": "c1"}}}}}, "eval-a")
    _workspace(tmp_path, monkeypatch, {"eval-a": ours, "table5-a": ours, "eval-b": ours})
    monkeypatch.setattr(seeds, "exp_ref", lambda s: (_ for _ in ()).throw(UserError("none")))
    assert seeds.collect(config.parse({}), [])["seeds"] == [0, 1]  # its baseline ran what the workspace runs
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    lock["stages"]["eval-b"]["params"]["params.yaml"]["eval.square_queries"] = 5000  # changed since seed 1 ran
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    obj = seeds.collect(config.parse({}), [])
    assert "b" not in obj["defenders"]  # b: seed 1 leaves (the main run alone is no spread)...
    assert obj["defenders"]["a"]["pgd"]["0.3"]["seeds"] == [0, 1]  # ...a's, which rest on nothing changed, stay
    assert seeds.still_to_run(1, [*FILES, "headline"]) == ["eval-b"]  # and its next experiment reruns b
    source = json.loads((tmp_path / "reports/seeds.json").read_text())["sources"]["1"]
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: "")  # a clone without the baseline commit cannot tell
    obj = seeds.collect(config.parse({}), [])
    assert obj["seeds"] == [0], source


def test_an_experiment_loses_the_defenders_that_ran_otherwise_and_keeps_the_others():
    files = {"eval-a": ("a", "reports/eval/a.json"), "eval-b": ("b", "reports/eval/b.json")}
    ours = _study(0)
    assert seedscope.ran_this(_study(4), ours, ["eval-a", "eval-b"], files) == (["eval-a", "eval-b"], [])
    # a's training budget upstream, then b's own attack budget, then b's code
    assert seedscope.ran_this(_study(4, epochs=20), ours, ["eval-a", "eval-b"], files) == (["eval-b"], ["a"])
    theirs = _study(4)
    theirs["stages"]["eval-b"]["params"]["params.yaml"]["eval.square_queries"] = 1000
    assert seedscope.ran_this(theirs, ours, ["eval-a", "eval-b"], files) == (["eval-a"], ["b"])
    theirs = _study(4)
    theirs["stages"]["eval-b"]["params"]["codehash.json"]["x.hash"] = "c2"
    assert seedscope.ran_this(theirs, ours, ["eval-a", "eval-b"], files) == (["eval-a"], ["b"])
    # a defender goes whole: its Table 5 stage ran this, its evaluation did not
    files["table5-a"] = ("a", "reports/table5/a.json")
    ours["stages"]["table5-a"] = {**_stage(0, deps=["data/prepared"], outs=["reports/table5/a.json"])}
    theirs = _study(4)
    theirs["stages"]["table5-a"] = {**_stage(4, deps=["data/prepared"], outs=["reports/table5/a.json"])}
    theirs["stages"]["eval-a"]["params"]["codehash.json"]["x.hash"] = "c2"
    assert seedscope.ran_this(theirs, ours, ["eval-a", "table5-a", "eval-b"], files) == (["eval-b"], ["a"])


def test_collect_keeps_what_an_experiment_here_ran_this_way_and_leaves_the_rest(tmp_path, monkeypatch, capsys):
    from test_seeds_merge import _git, _lock

    _workspace(tmp_path, monkeypatch, {})
    exp = {"dvc.lock": _lock({s: 1 for s in FILES}, {"eval-b": "c2"}), "params.yaml": {"run": {"seed": 1}},
           "reports/eval/a.json": {"results": {"pgd": {"0.3": {"error": 0.55}}}},
           "reports/table5/a.json": {"results": {"pgd": {"0.4": {"error": 0.75}}}},
           "reports/eval/b.json": {"results": {"pgd": {"0.3": {"error": 0.85}}}}}
    monkeypatch.setattr(seeds, "_git", _git(exp))
    monkeypatch.setattr(seeds, "exp_ref", lambda s: "refs/exps/ef/gh/seed-1")
    obj = seeds.collect(config.parse({}), [1])  # b's evaluation ran other code: b leaves, a stays
    assert obj["defenders"]["a"]["pgd"]["0.3"]["per_seed"] == [0.5, 0.55] and "b" not in obj["defenders"]
    assert set(obj["code"]["1"]) == {"eval-a", "table5-a"}
    assert "seed 1's b left out" in capsys.readouterr().out
    exp["dvc.lock"] = _lock({s: 1 for s in FILES}, {s: "c2" for s in FILES})  # nothing ran this code
    with pytest.raises(UserError, match="none of the measured stages .* with this code and params"):
        seeds.collect(config.parse({}), [1])
