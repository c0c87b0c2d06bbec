"""Training-seed variance (advgame.pipeline.seeds, the report's seeds section): which seeds an experiment
changes, the statistics of reports/seeds.json, and the guard against experiments of other code."""
from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path

import pytest
from test_report import PARAMS, eval_obj, standard

from advgame import UserError, config
from advgame.evaluation import paired
from advgame.pipeline import generator as pipeline
from advgame.pipeline import seeds
from advgame.report import study as report_study


def test_every_training_seed_changes_and_the_split_does_not():
    p = config.parse({})
    assert seeds.training_seed_keys(p) == ["run.seed"]
    # run.seed alone moves every section's training seed (an offset), never the split's
    with_seed = {n for n in type(p).model_fields if "seed" in type(getattr(p, n)).model_fields}
    assert set(config.training_sections(p)) == with_seed - {"data", "run"}
    assert {"baseline", "attacker", "game", "magnet", "catmouse", "pgd_at"} <= set(config.training_sections(p))
    q = config.parse({"run": {"seed": 3}, "baseline": {"seed": 5}, "data": {"seed": 7}})
    assert q.run.seed == 3 and q.baseline.seed == 8 and q.data.seed == 7 and q.eval.seeds == [0]
    assert all(getattr(q, n).seed == getattr(p, n).seed + 3 for n in config.training_sections(p) if n != "baseline")
    assert config.parse({"baseline": {"seed": 5}}).baseline.seed == 5  # run.seed 0: seeds as written
    cmd = seeds.queue_command(p, 2, ["eval-baseline", "eval-alt"])
    assert cmd == ["dvc", "exp", "run", "--queue", "-n", "seed-2", "-S", "run.seed=2", "eval-baseline", "eval-alt"]
    assert seeds.OUT == pipeline.SEEDS


def test_fit_trains_other_weights_when_only_run_seed_changes():
    import torch

    from advgame import training

    x, y = torch.rand(64, 1, 4, 4), torch.arange(64) % 3

    def trained(run_seed: int) -> torch.Tensor:
        cfg = config.parse({"run": {"seed": run_seed}, "baseline": {"epochs": 1, "batch": 8}}).baseline
        torch.manual_seed(0)  # the same initial weights: only the section's generator may differ
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        training.fit(model, x, y, training.standard_objective, cfg)
        return model[1].weight.detach().clone()

    assert torch.equal(trained(0), trained(0))
    assert not torch.equal(trained(0), trained(1))


def test_the_main_run_is_never_queued_as_another_seed(monkeypatch):
    monkeypatch.setattr(seeds, "_sh", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(UserError, match="main run"):
        seeds.run(config.parse({}), [0, 1])


def test_summary_statistics_and_incomplete_cells():
    runs = [{"d": {"pgd-curr": {"0.3": e}, "clean": {"0": 0.01}}} for e in (0.5, 0.6, 0.8)]
    runs[2]["d"]["square"] = {"0.3": 0.4}  # one seed only: not comparable, left out
    out = seeds.summarise(runs, [0, 1, 2])
    c = out["defenders"]["d"]["pgd-curr"]["0.3"]
    assert c["per_seed"] == [0.5, 0.6, 0.8] and (c["min"], c["max"]) == (0.5, 0.8)
    assert c["mean"] == pytest.approx(0.6333, abs=1e-4)
    assert c["sd"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.8]), abs=1e-4)
    assert "square" not in out["defenders"]["d"] and out["seeds"] == [0, 1, 2]
    assert out["defenders"]["d"]["clean"]["0"]["sd"] == 0.0


def test_cells_take_clean_and_the_main_eta_only():
    ev = eval_obj("d", standard(pgd=0.6))
    got = seeds.cells(ev, "0.3")
    assert got["clean"] == {"0": 0.02} and got["pgd-curr"] == {"0.3": 0.6}
    assert all(set(v) <= {"0", "0.3"} for v in got.values())


def test_an_experiment_is_judged_by_its_stages_code_hash(monkeypatch, tmp_path):
    # today's locks: the code a stage ran is its script's hash in codehash.json (a param)
    import yaml

    def lock(code, model="m1"):
        return {"stages": {"eval-a": {"deps": [{"path": "models/a.pt", "md5": model}],
                                      "params": {"codehash.json": {"evaluate.hash": code}}}}}

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock("c1")))
    files = {"dvc.lock": lock("c2"), "params.yaml": {"run": {"seed": 1}}}
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: yaml.safe_dump(files[a[1].split(":")[1]]))
    with pytest.raises(UserError, match="other code.*eval-a"):
        seeds.check_same_code("refs/exps/ab/cd/seed-1", 1, ["eval-a"])
    files["dvc.lock"] = lock("c1", model="m2")  # the same code, another model: fine
    seeds.check_same_code("refs/exps/ab/cd/seed-1", 1, ["eval-a"])
    # an experiment from before codehash.json (source md5s as deps) ran other code by definition
    files["dvc.lock"] = {"stages": {"eval-a": {"deps": [{"path": "src/advgame/x.py", "md5": "x"}]}}}
    with pytest.raises(UserError, match="other code.*eval-a"):
        seeds.check_same_code("refs/exps/ab/cd/seed-1", 1, ["eval-a"])


def test_an_experiment_of_other_code_is_refused(monkeypatch, tmp_path):
    lock = {"stages": {"eval-a": {"deps": [{"path": "src/advgame/attacks.py", "md5": "x"},
                                           {"path": "models/a.pt", "md5": "m1"}]}}}
    import yaml
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    other = {"stages": {"eval-a": {"deps": [{"path": "src/advgame/attacks.py", "md5": "y"},
                                            {"path": "models/a.pt", "md5": "m2"}]}}}
    same = {"stages": {"eval-a": {"deps": [{"path": "src/advgame/attacks.py", "md5": "x"},
                                           {"path": "models/a.pt", "md5": "m2"}]}}}  # other model: fine
    files = {"dvc.lock": other, "params.yaml": {"run": {"seed": 1}}}
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: yaml.safe_dump(files[a[1].split(":")[1]]))
    with pytest.raises(UserError, match="other code.*eval-a"):
        seeds.check_same_code("refs/exps/ab/cd/seed-1", 1, ["eval-a"])
    files["dvc.lock"] = same
    seeds.check_same_code("refs/exps/ab/cd/seed-1", 1, ["eval-a"])
    with pytest.raises(UserError, match="run.seed 1, not 2"):
        seeds.check_same_code("refs/exps/ab/cd/seed-2", 2, ["eval-a"])
    # an experiment without one of the targets (one queued before the headline stage existed)
    # is not done: `run` queues it again (DVC's run-cache restores the stages it had)
    lock["stages"]["headline"] = {"deps": [{"path": "stages/headline.py", "md5": "h"}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    monkeypatch.setattr(seeds, "exp_ref", lambda s: "refs/exps/ab/cd/seed-1")
    assert seeds._done(1, ["eval-a"]) and not seeds._done(1, ["eval-a", "headline"])


def test_a_seed_experiment_targets_the_evaluations_and_the_headline(tmp_path):
    dvc_yaml = tmp_path / "dvc.yaml"
    p = config.load(Path(__file__).resolve().parents[1] / "params.yaml")  # the study's, with its ablations
    dvc_yaml.write_text(pipeline.render(p))
    got = seeds.targets(str(dvc_yaml))
    assert got[-1] == "headline" and got[:-1] == list(seeds.measured(str(dvc_yaml)))
    assert set(seeds.eval_stages(str(dvc_yaml))) < set(got)
    assert {"ablation-sens-off", "ablation-smooth"} <= set(got)  # Q2's controls, across seeds too
    from advgame.names import final_defenders
    assert {f"eval-{d}" for d in final_defenders(p)} <= set(got)


def _study(seeds_obj):
    p = config.parse(PARAMS)
    evals = {"minimax": standard(worst=0.50), "alt": standard(worst=0.60)}
    return report_study.Study(p, {d: eval_obj(d, e) for d, e in evals.items()}, seeds=paired.SeedTable(seeds_obj))


def test_seeds_section_quotes_the_spread_beside_the_interval():
    from advgame.report.sections import seeds_section

    assert "One training seed" in seeds_section(_study(None))
    runs = [{"minimax": {"worst-case": {"0.3": w}}, "alt": {"worst-case": {"0.3": 0.6}}}
            for w in (0.50, 0.58, 0.70)]
    text = seeds_section(_study(seeds.summarise(runs, [0, 1, 2])))
    _, lo, hi = paired.seed_interval([0.50, 0.58, 0.70], 1000)  # the seed-level interval of the mean
    assert f"0.500 (0.480–0.520); 0.593 ({lo:.3f}–{hi:.3f}), ±0.101 [0.500–0.700]" in text
    # minimax's spread (0.20) is wider than its interval (0.04); alt's (0) is not
    assert "`minimax` worst-case" in text and "`alt` worst-case" not in text


def test_a_difference_is_real_only_when_every_seed_agrees():
    agree = [{"minimax": {"worst-case": {"0.3": w}}, "alt": {"worst-case": {"0.3": 0.6}}}
             for w in (0.50, 0.52, 0.55)]
    flips = [{"minimax": {"worst-case": {"0.3": w}}, "alt": {"worst-case": {"0.3": 0.6}}}
             for w in (0.50, 0.52, 0.65)]
    yes = _study(seeds.summarise(agree, [0, 1, 2])).pair("minimax", "worst-case", "alt")
    no = _study(seeds.summarise(flips, [0, 1, 2])).pair("minimax", "worst-case", "alt")
    assert yes.real and yes.seeds_agree == 3
    assert not no.real and no.seeds_agree == 2


def test_a_seed_that_already_ran_this_code_is_kept(monkeypatch):
    calls, collected = [], []
    monkeypatch.setattr(seeds, "targets", lambda: ["eval-a", "headline"])
    monkeypatch.setattr(seeds, "eval_stages", lambda: ["eval-a"])
    monkeypatch.setattr(seeds, "_done", lambda s, stages: s == 1)
    monkeypatch.setattr(seeds, "collect", lambda p, s: collected.append(list(s)))
    fork_server = seeds.warm.Warm("/warm/bin", "/warm/s", "/venv/python", 0.0)
    monkeypatch.setattr(seeds.warm, "server", lambda: contextlib.nullcontext(fork_server))

    def sh(*cmd, ok=False, env=None):
        calls.append(cmd)
        if cmd[1:3] == ("queue", "start"):  # the worker imports each experiment's own code, warm
            assert env["PYTHONPATH"].split(os.pathsep)[0] == "src"
            assert env["PATH"].startswith("/warm/bin") and env["ADVGAME_WARM"] == "/warm/s"
        out = "seed-1  Success\nseed-2  Success\n" if cmd[1:3] == ("queue", "status") else ""
        return type("R", (), {"stdout": out})()

    monkeypatch.setattr(seeds, "_sh", sh)
    seeds.run(config.parse({}), [1, 2], poll=0)
    queued = [c for c in calls if c[:4] == ("dvc", "exp", "run", "--queue")]
    assert [c[5] for c in queued] == ["seed-2"] and collected == [[1, 2]]
    calls.clear()
    seeds.run(config.parse({}), [1, 2], poll=0, force=True)  # --force reruns both
    assert [c[5] for c in calls if c[:4] == ("dvc", "exp", "run", "--queue")] == ["seed-1", "seed-2"]


def _fake_sh(calls, fail=()):
    def sh(*cmd, ok=False, env=None):
        calls.append(cmd)
        if cmd[:3] in fail and not ok:
            raise UserError("failed")
        return type("R", (), {"stdout": ""})()
    return sh


def test_an_experiment_lacking_only_a_later_stage_is_refreshed_not_retrained(monkeypatch):
    calls, collected = [], []
    monkeypatch.setattr(seeds, "targets", lambda: ["eval-a", "headline"])
    monkeypatch.setattr(seeds, "eval_stages", lambda: ["eval-a"])
    monkeypatch.setattr(seeds, "_done", lambda s, stages: stages == ["eval-a"])  # evals: this code
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: "")  # a clean workspace
    monkeypatch.setattr(seeds, "exp_ref", lambda s: f"refs/exps/ab/cd/seed-{s}")
    monkeypatch.setattr(seeds, "collect", lambda p, s: collected.append(list(s)))
    monkeypatch.setattr(seeds, "_sh", _fake_sh(calls))
    seeds.run(config.parse({}), [1], poll=0)
    back = [("git", "checkout", "HEAD", "--", *seeds.STATE), ("git", "clean", "-fdq", "--", "reports"),
            ("dvc", "checkout", "--force")]
    # the experiment's params, lock and results over the workspace's code; only what it lacks runs
    assert calls == [("git", "checkout", "refs/exps/ab/cd/seed-1", "--", "params.yaml", "dvc.lock", "reports"),
                     ("dvc", "checkout", "--force"), ("dvc", "exp", "rename", "seed-1", "seed-1-old"),
                     ("dvc", "exp", "run", "-n", "seed-1", "eval-a", "headline"), *back,
                     ("dvc", "exp", "remove", "seed-1-old")]
    assert collected == [[1]]  # nothing queued: no ~70 min retraining
    calls.clear()  # a failed run keeps the old experiment under its name and restores the workspace
    monkeypatch.setattr(seeds, "_sh", _fake_sh(calls, fail={("dvc", "exp", "run")}))
    with pytest.raises(UserError):
        seeds.run(config.parse({}), [1], poll=0)
    assert calls[-4:] == [("dvc", "exp", "rename", "seed-1-old", "seed-1"), *back]
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: " M params.yaml\n")  # never over uncommitted work
    with pytest.raises(UserError, match="uncommitted"):
        seeds.run(config.parse({}), [1], poll=0)


def test_a_side_without_other_seeds_is_named_not_counted_as_disagreeing():
    runs = [{"minimax": {"worst-case": {"0.3": w}}} for w in (0.50, 0.52)]  # alt: main seed only
    pr = _study(seeds.summarise(runs, [0, 1])).pair("minimax", "worst-case", "alt")
    # judged on the seeds both sides have: the main seed alone, whose paired test decides
    assert pr.real and (pr.seeds, pr.seeds_agree) == (1, 1) and pr.unmeasured == ("alt",)
    assert "`alt` not run at the other training seeds" in pr.text() and pr.p_seeds is None


def test_collect_reads_every_seeds_evaluations_and_ablations(monkeypatch, tmp_path):
    import json

    import yaml
    monkeypatch.chdir(tmp_path)
    ev = lambda e: {"results": {"clean": {"0": {"error": 0.02}}, "fgsm-curr": {"0.3": {"error": e}}}}  # noqa: E731
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval-a": {}, "ablation-sens-off": {}, "headline": {}}}))
    lock = {"stages": {s: {"deps": [{"path": "src/advgame/x.py", "md5": "same"}]} for s in ("eval-a", "ablation-sens-off")}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    for f, e in (("reports/eval/a.json", 0.5), ("reports/ablation/sens-off.json", 0.1)):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(json.dumps(ev(e)))
    theirs = {"dvc.lock": yaml.safe_dump(lock), "params.yaml": yaml.safe_dump({"run": {"seed": 1}}),
              "reports/eval/a.json": json.dumps(ev(0.6)), "reports/ablation/sens-off.json": json.dumps(ev(0.3))}
    monkeypatch.setattr(seeds, "exp_ref", lambda s: "refs/exps/ab/cd/seed-1")
    monkeypatch.setattr(seeds, "_git", lambda *a, **k: theirs[a[1].split(":", 1)[1]] if a[0] == "show" else "abc")
    obj = seeds.collect(config.parse({}), [1])
    assert obj["defenders"]["a"]["fgsm-curr"]["0.3"]["per_seed"] == [0.5, 0.6]
    assert obj["defenders"]["sens-off"]["fgsm-curr"]["0.3"]["per_seed"] == [0.1, 0.3]
    # the report's comparisons with the control now count its seeds
    table = paired.SeedTable(obj)
    assert table.agreement("a", "fgsm-curr", "sens-off", "fgsm-curr", "0.3", a_lower=False) == (2, 1)


def test_compare_reaches_back_to_the_oldest_seed_experiment(monkeypatch):
    refs = ("refs/exps/ab/cdef/seed-1\nrefs/exps/ab/cdef/seed-2\nrefs/exps/12/3456/seed-3\n"
            "refs/exps/exec/EXEC_HEAD\nrefs/exps/99/9999/other\n")
    behind = {"abcdef..HEAD": "7\n", "123456..HEAD": "2\n"}

    def git(*args, ok=False):
        return refs if args[0] == "for-each-ref" else behind.get(args[-1], "")
    monkeypatch.setattr(seeds, "_git", git)
    assert seeds.commits_back() == 8  # the baseline commit itself and the 7 after it
    behind["abcdef..HEAD"] = ""  # a baseline git no longer has: ignored
    assert seeds.commits_back() == 3


def test_rebase_replaces_the_main_run_and_keeps_the_other_seeds_marked(monkeypatch, tmp_path):
    import json

    import yaml
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval-a": {}, "eval-b": {}}}))
    ev = lambda e: {"results": {"clean": {"0": {"error": 0.02}}, "pgd-curr": {"0.3": {"error": e}}}}  # noqa: E731
    for d, e in (("a", 0.4), ("b", 0.9)):
        (tmp_path / f"reports/eval/{d}.json").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"reports/eval/{d}.json").write_text(json.dumps(ev(e)))
    old = {**seeds.summarise([{"a": {"pgd-curr": {"0.3": 0.4}, "clean": {"0": 0.02}}},
                              {"a": {"pgd-curr": {"0.3": 0.6}, "clean": {"0": 0.04}}},
                              {"a": {"pgd-curr": {"0.3": 0.7}, "clean": {"0": 0.05}}}], [0, 1, 2]),
           "eta": "0.3", "sources": {"0": "workspace", "1": "refs/exps/x/seed-1 (ab)", "2": "refs/exps/x/seed-2 (cd)"},
           "training_seed_keys": ["run.seed"], "note": "n"}
    (tmp_path / "reports/seeds.json").write_text(json.dumps(old))
    monkeypatch.setattr(seeds, "_git", lambda *a: "1234abc\n")
    obj = seeds.rebase(config.parse({}), "reports/seeds.json")
    assert obj["defenders"]["a"]["pgd-curr"]["0.3"]["per_seed"] == [0.4, 0.6, 0.7]
    assert obj["defenders"]["a"]["pgd-curr"]["0.3"]["mean"] == round((0.4 + 0.6 + 0.7) / 3, 4)
    assert obj["defenders"]["a"]["clean"]["0"]["per_seed"] == [0.02, 0.04, 0.05]
    assert "b" not in obj["defenders"]  # no other seed has it: not comparable, left out
    assert obj["sources"]["0"] == "workspace"
    assert obj["sources"]["1"].startswith("refs/exps/x/seed-1 (ab) [kept from reports/seeds.json")
    assert json.loads((tmp_path / "reports/seeds.json").read_text()) == obj
    # rebased twice: the mark is not repeated
    assert seeds.rebase(config.parse({}), "reports/seeds.json")["sources"]["1"].count("[kept") == 1
    # the code change moved a cell whose other seeds it would keep: refused, unless that attack goes
    (tmp_path / "reports/eval/a.json").write_text(json.dumps(ev(0.45)))
    with pytest.raises(UserError, match=r"moved where .*`a` pgd-curr at 0.3"):
        seeds.rebase(config.parse({}), "reports/seeds.json")
    obj = seeds.rebase(config.parse({}), "reports/seeds.json", drop_attacks=("pgd-curr",))
    assert "pgd-curr" not in obj["defenders"]["a"] and obj["defenders"]["a"]["clean"]["0"]["per_seed"] == [0.02, 0.04, 0.05]


def test_rebase_after_a_rerun_on_another_machine_keeps_the_seeds_it_moved(monkeypatch, tmp_path):
    """--other-host: the main run rerun on another machine moves cells by floating point alone; the
    other seeds stay this code's measurements, kept only where the workspace's results.json names
    other machines than the committed one (else the code moved them: refused as without it)."""
    import json

    import yaml
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval-a": {}}}))
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/a.json").write_text(json.dumps({"results": {"pgd-curr": {"0.3": {"error": 0.45}}}}))
    runs = [{"a": {"pgd-curr": {"0.3": v}}} for v in (0.4, 0.6)]
    (tmp_path / "reports/seeds.json").write_text(json.dumps(
        {**seeds.summarise(runs, [0, 1]), "eta": "0.3", "sources": {"0": "workspace", "1": "x"}, "note": "n"}))
    host = lambda cpu, cap: json.dumps({"hosts": [{"cpu": cpu, "cpu_capability": cap, "stages": ["eval-a"]}]})  # noqa: E731
    monkeypatch.setattr(seeds, "_git", lambda *a, ok=False: host("AMD EPYC", "AVX2") if a[0] == "show" else "abc\n")
    (tmp_path / "reports/results.json").write_text(host("AMD EPYC", "AVX2"))
    with pytest.raises(UserError, match="ran where the committed one did"):
        seeds.rebase(config.parse({}), "reports/seeds.json", host=True)
    (tmp_path / "reports/results.json").write_text(host("Intel(R) Xeon(R) Processor", "AVX512"))
    with pytest.raises(UserError, match="moved where"):
        seeds.rebase(config.parse({}), "reports/seeds.json")
    obj = seeds.rebase(config.parse({}), "reports/seeds.json", host=True)
    assert obj["defenders"]["a"]["pgd-curr"]["0.3"]["per_seed"] == [0.45, 0.6]
    assert "an earlier code and host" in obj["sources"]["1"]


def test_rebase_drops_the_other_seeds_of_a_defender_whose_evaluation_changed(monkeypatch, tmp_path):
    import json

    import yaml
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval-a": {}, "eval-m": {}}}))
    for d in ("a", "m"):
        (tmp_path / f"reports/eval/{d}.json").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"reports/eval/{d}.json").write_text(json.dumps({"results": {"pgd-curr": {"0.3": {"error": 0.9}}}}))
    runs = [{"a": {"pgd-curr": {"0.3": 0.9}}, "m": {"pgd-curr": {"0.3": 0.5}}}, {d: {"pgd-curr": {"0.3": 0.6}} for d in ("a", "m")}]
    (tmp_path / "reports/seeds.json").write_text(json.dumps(
        {**seeds.summarise(runs, [0, 1]), "eta": "0.3", "sources": {"0": "workspace", "1": "x"}, "note": "n"}))
    monkeypatch.setattr(seeds, "_git", lambda *a: "abc\n")
    obj = seeds.rebase(config.parse({}), "reports/seeds.json", drop=("m",))
    assert obj["defenders"]["a"]["pgd-curr"]["0.3"]["per_seed"] == [0.9, 0.6]
    assert "m" not in obj["defenders"]  # its other seed ran another attack: not comparable
    # an attack whose cells changed for every defender: its kept seeds go, the others stay
    for d in ("a", "m"):
        (tmp_path / f"reports/eval/{d}.json").write_text(json.dumps(
            {"results": {"pgd-curr": {"0.3": {"error": 0.9}}, "square": {"0.3": {"error": 0.95}}}}))
    runs = [{d: {"pgd-curr": {"0.3": p}, "square": {"0.3": v}} for d in ("a", "m")} for p, v in ((0.9, 0.5), (0.6, 0.6))]
    (tmp_path / "reports/seeds.json").write_text(json.dumps(
        {**seeds.summarise(runs, [0, 1]), "eta": "0.3", "sources": {"0": "workspace", "1": "x"}, "note": "n"}))
    obj = seeds.rebase(config.parse({}), "reports/seeds.json", drop_attacks=("square",))
    assert obj["defenders"]["a"]["pgd-curr"]["0.3"]["per_seed"] == [0.9, 0.6]
    assert "square" not in obj["defenders"]["a"]  # it leaves the file until `make seeds` measures it again


def test_a_paper_scope_seed_runs_the_papers_defenders_table5_and_ablations_only(tmp_path):
    dvc_yaml = tmp_path / "dvc.yaml"
    p = config.load(Path(__file__).resolve().parents[1] / "params.yaml")
    dvc_yaml.write_text(pipeline.render(p))
    ours = seeds.paper_defenders(p)
    assert ours == ["baseline", f"adv-fgsm-{p.catmouse.rounds}", "fgsm-at", "sens-fgsm", "alt", "minimax", "maximin"]
    got = seeds.targets(str(dvc_yaml), defenders=ours)
    assert {f"eval-{d}" for d in ours} <= set(got) and {"table5-minimax", "table5-alt", "ablation-smooth"} <= set(got)
    assert not {"eval-pgd-at", "eval-trades", "eval-magnet", "headline"} & set(got)
    assert {"table5-minimax"} <= set(seeds.targets(str(dvc_yaml)))  # every seed measures Table 5's etas


def _lock(seed_of: dict[str, int], code="c1"):
    return {"stages": {s: {"params": {"params.yaml": {"run.seed": r}, "codehash.json": {"evaluate.hash": code}}}
                       for s, r in seed_of.items()}}


def test_a_seed_counts_only_for_the_stages_its_experiment_ran():
    lock = _lock({"eval-a": 3, "eval-b": 0, "table5-a": 3})  # eval-b: the baseline commit's entry
    assert seeds.seed_stages(lock, 3, ["eval-a", "eval-b", "table5-a", "eval-c"]) == ["eval-a", "table5-a"]
    assert seeds.seed_stages(lock, 0, ["eval-a", "eval-b"]) == ["eval-b"]


def test_collect_takes_each_seed_where_it_ran_and_keeps_recorded_seeds_of_this_code(monkeypatch, tmp_path):
    import json

    import yaml
    monkeypatch.chdir(tmp_path)
    ev = lambda e, eta="0.3": {"results": {"fgsm-curr": {eta: {"error": e}}}}  # noqa: E731
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"eval-a": {}, "eval-b": {}, "table5-a": {}}}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock({"eval-a": 0, "eval-b": 0, "table5-a": 0})))
    ours = {"reports/eval/a.json": ev(0.5), "reports/eval/b.json": ev(0.9), "reports/table5/a.json": ev(0.7, "0.4")}
    for f, obj in ours.items():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(json.dumps(obj))
    exps = {  # seed 1: every defender; seed 3: the paper scope, defender a only
        1: {"dvc.lock": _lock({"eval-a": 1, "eval-b": 1, "table5-a": 1}), "params.yaml": {"run": {"seed": 1}},
            "reports/eval/a.json": ev(0.6), "reports/eval/b.json": ev(0.8), "reports/table5/a.json": ev(0.6, "0.4")},
        3: {"dvc.lock": _lock({"eval-a": 3, "eval-b": 0, "table5-a": 3}), "params.yaml": {"run": {"seed": 3}},
            "reports/eval/a.json": ev(0.5), "reports/runs/eval/a.json": ev(0.4),  # the published copy: seed 0's
            "reports/eval/b.json": ev(0.9), "reports/table5/a.json": ev(0.5, "0.4")}}
    exps[3]["dvc.lock"]["stages"]["eval-a"]["outs"] = [{"path": "reports/runs/eval/a.json"}]  # the stage's own
    refs = {s: f"refs/exps/ab/cd/seed-{s}" for s in exps}

    def git(*a, ok=False):
        if a[0] != "show":
            return "abcdef1234"
        ref, f = a[1].split(":", 1)
        if ref == "abcd":  # the experiments' baseline commit (refs/exps/ab/cd/...): this study at seed 0
            return yaml.safe_dump(_lock({"eval-a": 0, "eval-b": 0, "table5-a": 0}))
        if f.startswith(("reports/table5/", "reports/runs/")):  # DVC outputs, not in git
            return ""
        obj = exps[int(ref.rsplit("-", 1)[1])][f]
        return json.dumps(obj) if f.endswith(".json") else yaml.safe_dump(obj)

    import dvc.api  # Table 5's files: read from DVC's cache at the experiment's revision
    monkeypatch.setattr(dvc.api, "read", lambda f, rev: json.dumps(exps[int(rev.rsplit("-", 1)[1])][f]))

    def exp_ref(s):
        if s not in refs:
            raise UserError(f"no experiment seed-{s}")
        return refs[s]
    monkeypatch.setattr(seeds, "_git", git)
    monkeypatch.setattr(seeds, "exp_ref", exp_ref)
    obj = seeds.collect(config.parse({}), [1, 3])
    a, b = obj["defenders"]["a"]["fgsm-curr"], obj["defenders"]["b"]["fgsm-curr"]
    assert a["0.3"]["per_seed"] == [0.5, 0.6, 0.4] and a["0.3"]["seeds"] == [0, 1, 3]
    assert a["0.4"]["per_seed"] == [0.7, 0.6, 0.5]  # Table 5's further eta, across seeds too
    assert b["0.3"]["per_seed"] == [0.9, 0.8] and b["0.3"]["seeds"] == [0, 1]  # seed 3's b is seed 0's
    assert set(obj["code"]["3"]) == {"eval-a", "table5-a"}
    table = paired.SeedTable(obj)
    assert table.per_seed("b", "fgsm-curr", "0.3") == [0.9, 0.8]
    assert table.agreement("a", "fgsm-curr", "b", "fgsm-curr", "0.3", a_lower=True) == (2, 1)  # seeds 0, 1
    # a clone without the experiments keeps them from the file while their code is this code
    refs.clear()
    again = seeds.collect(config.parse({}), [])
    assert again["defenders"] == obj["defenders"] and "[kept" in again["sources"]["3"]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock({"eval-a": 0, "eval-b": 0, "table5-a": 0}, code="c2")))
    (tmp_path / "reports/seeds.json").write_text(json.dumps(obj))
    assert seeds.collect(config.parse({}), [])["seeds"] == [0]  # other code now: both left out
    with pytest.raises(UserError, match="no experiment seed-1"):
        seeds.collect(config.parse({}), [1])  # a seed asked for must be there
