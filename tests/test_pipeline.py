"""dvc.yaml is generated from params.yaml: it must be current, and its shape must let DVC rerun
only what changed."""
import copy
from pathlib import Path

import pytest
import yaml

from advgame import config
from advgame.pipeline import codedeps, codehash
from advgame.pipeline import generator as pipeline

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def params(**changes) -> config.Params:
    """The default params with `section.key` overrides (write `section__key=value`)."""
    raw = copy.deepcopy(RAW)
    for k, v in changes.items():
        section, key = k.split("__")
        raw[section][key] = v
    return config.parse(raw)


def stages(p: config.Params) -> dict:
    return yaml.safe_load(pipeline.render(p))["stages"]


def test_committed_dvc_yaml_is_current(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert pipeline.main(["--check"]) == 0


def test_check_detects_stale_file(tmp_path, capsys):
    out = tmp_path / "dvc.yaml"
    out.write_text(pipeline.render(params(catmouse__rounds=2)))
    assert pipeline.main(["--check", "--params", str(ROOT / "params.yaml"), "--out", str(out)]) == 1
    assert "stale" in capsys.readouterr().err
    assert pipeline.main(["--params", str(ROOT / "params.yaml"), "--out", str(out)]) == 0
    assert pipeline.main(["--check", "--params", str(ROOT / "params.yaml"), "--out", str(out)]) == 0


def test_rounds_form_a_chain():
    st = stages(params(catmouse__rounds=3))
    assert [s for s in st if s.startswith("round-")] == ["round-1", "round-2", "round-3"]
    for k in (1, 2, 3):
        prev = "models/baseline.pt" if k == 1 else f"models/adv-fgsm-{k - 1}.pt"
        r = st[f"round-{k}"]
        assert prev in r["deps"]
        assert f"models/adv-fgsm-{k}.pt" in r["outs"]
        assert not any(d.startswith("models/adv-fgsm-") and d != prev for d in r["deps"])
    assert "eval-adv-fgsm-3" in st and "eval-adv-fgsm-2" not in st


def test_adding_a_round_leaves_earlier_rounds_unchanged():
    three, four = stages(params(catmouse__rounds=3)), stages(params(catmouse__rounds=4))
    for k in (1, 2, 3):
        assert three[f"round-{k}"] == four[f"round-{k}"]
        assert "catmouse.rounds" not in four[f"round-{k}"]["params"]
        assert "catmouse.matrix_rounds" not in four[f"round-{k}"]["params"]
        assert "catmouse" not in four[f"round-{k}"]["params"]  # the whole section would include rounds


@pytest.mark.parametrize("gone", ["trades", "magnet", "minimax", "sens-fgsm"])
def test_removing_a_defender_removes_its_stages(gone):
    defenders = [d for d in RAW["study"]["defenders"] if d != gone]
    st = stages(params(study__defenders=defenders))
    assert gone not in st and f"attackers-{gone}" not in st and f"eval-{gone}" not in st
    text = yaml.safe_dump(st)
    assert f"models/{gone}.pt" not in text and f"reports/eval/{gone}.json" not in text
    assert f"--defender {gone}" not in text


def test_without_catmouse_there_are_no_rounds():
    defenders = [d for d in RAW["study"]["defenders"] if d != "catmouse"]
    st = stages(params(study__defenders=defenders))
    assert not any(s.startswith("round-") or "adv-fgsm" in s for s in st) and "catmouse" not in st


def walk_keys(d, prefix=""):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from walk_keys(v, f"{prefix}{k}.")


def test_no_param_named_size_or_nfiles():
    # DVC's run-cache treats keys named size/nfiles as file metadata and ignores them
    bad = [k for k in walk_keys(RAW) if k.split(".")[-1] in ("size", "nfiles")]
    assert not bad


def lookup(raw: dict, dotted: str | dict):
    if isinstance(dotted, dict):  # `params.yaml: null`, the whole file (check-params)
        return raw
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return KeyError
        node = node[part]
    return node


def test_every_declared_param_exists_in_params_yaml():
    # DVC refuses to run a stage whose declared param key is missing from params.yaml
    st = stages(config.parse(RAW))
    missing = {f"{name}: {key}" for name, s in st.items() for key in s.get("params", [])
               if lookup(RAW, key) is KeyError}
    assert not missing, sorted(missing)


def test_default_stage_count_is_bounded():
    st = stages(config.parse(RAW))
    assert len(st) < 150
    assert {"prepare", "baseline", "report"} <= set(st)


def test_every_stage_dependency_is_produced_or_in_the_repo():
    # a dependency that no stage writes must be a file in git (source or stage script)
    st = stages(config.parse(RAW))
    outs = set()
    for s in st.values():
        for group in ("outs", "metrics", "plots"):
            for o in s.get(group, []):
                outs.add(o if isinstance(o, str) else next(iter(o)))
    for name, s in st.items():
        for d in s.get("deps", []):
            produced = any(d == o or d.startswith(o + "/") for o in outs)
            # ... or the training-seed results `make seeds` writes and commits (advgame.pipeline.seeds)
            assert produced or d.startswith(("src/", "stages/")) or d == pipeline.SEEDS, f"{name}: {d}"


def test_the_report_depends_on_the_seed_results_once_they_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the generator renders the project in the working directory
    assert pipeline.SEEDS not in stages(config.parse(RAW))["report"]["deps"]
    (tmp_path / pipeline.SEEDS).parent.mkdir(parents=True)
    (tmp_path / pipeline.SEEDS).write_text("{}")
    assert pipeline.SEEDS in stages(config.parse(RAW))["report"]["deps"]


PROBE = """
import json, runpy, sys
out = {}
for script in sys.argv[1:]:
    for m in [m for m in sys.modules if m == "advgame" or m.startswith("advgame.")]:
        del sys.modules[m]
    runpy.run_path(script, run_name="probe")  # imports only: the stage runs under __main__
    out[script] = sorted(m.__file__ for n, m in sys.modules.items()
                         if n.startswith("advgame.") and getattr(m, "__file__", None))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded_modules():
    """script -> the advgame files Python actually loads when it imports the stage script: an
    independent check of the generator's ast walker (which also sees imports inside functions,
    so it may list more, never less)."""
    import json
    import subprocess
    import sys

    scripts = sorted({s["cmd"].split()[1] for n, s in stages(config.parse(RAW)).items() if n != "code"})
    r = subprocess.run([sys.executable, "-c", PROBE, *scripts], cwd=ROOT, capture_output=True, text=True,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")}, check=True)
    return {k: {str(Path(f).resolve().relative_to(ROOT)) for f in v} for k, v in json.loads(r.stdout).items()}


@pytest.mark.parametrize("name", [n for n in stages(config.parse(RAW)) if n != "code"])
def test_stage_depends_on_the_code_it_runs(name, loaded_modules):
    # editing a module a stage runs must rerun it (its script's code hash covers the module);
    # logging and the generator itself are exempt
    st = stages(config.parse(RAW))[name]
    script = st["cmd"].split()[1]
    assert st["params"][-1] == {codehash.FILE: [codehash.key(script)]}
    covered = set(codehash.files(script))
    exempt = {"src/advgame/__init__.py"} | {str(codedeps.module_file(m).relative_to(pipeline.ROOT))
                                            for m in pipeline.NOT_DEPS}
    needed = loaded_modules[script] - exempt
    assert needed and needed <= covered, sorted(needed - covered)
    assert script in covered and not any(d.startswith(("src/", "stages/")) for d in st.get("deps", []))


def test_the_code_stage_depends_on_every_source_and_writes_every_scripts_hash():
    st = stages(config.parse(RAW))
    code = st["code"]
    assert code["deps"] == codehash.sources() and code["outs"] == [{codehash.FILE: {"cache": False}}]
    assert "src/advgame/pipeline/tracking.py" in code["deps"] and "stages/evaluate.py" in code["deps"]
    scripts = {s["cmd"].split()[1] for n, s in st.items() if n != "code"}
    assert {Path(s).stem for s in scripts} <= set(codehash.table())


def test_the_code_hashes_and_the_code_stages_lock_entry_are_the_sources():
    # a source edited without `dvc repro code` leaves codehash.json or dvc.lock behind the code: a
    # fresh clone's `dvc status` would show a modified dependency and the committed results would
    # claim code they did not run
    import hashlib
    import json

    import yaml

    root = Path(__file__).resolve().parents[1]
    assert json.loads((root / codehash.FILE).read_text()) == codehash.table(), "codehash.json: run `dvc repro code`"
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["code"]
    stale = [d["path"] for d in lock["deps"] if hashlib.md5((root / d["path"]).read_bytes()).hexdigest() != d["md5"]
             ] if all((root / d["path"]).exists() for d in lock["deps"]) else ["a source file the lock lists is gone"]
    assert not stale and {d["path"] for d in lock["deps"]} == set(codehash.sources()), \
        f"dvc.lock's code stage is behind the sources ({stale[:3]}): run `dvc repro code`"


def test_every_stage_declares_its_stage_report():
    # run_stage writes reports/stages/<stage>.json: an undeclared output is invisible to DVC
    # (`code` hashes files: no run_stage, no torch)
    for name, st in stages(config.parse(RAW)).items():
        if name == "code":
            continue
        declared = [o if isinstance(o, str) else next(iter(o)) for o in st.get("outs", [])]
        assert f"reports/stages/{name}.json" in declared, name


def test_the_headline_file_is_the_only_metric_and_plots_have_data():
    doc = yaml.safe_load(pipeline.render(config.parse(RAW)))
    metrics = [next(iter(m)) for s in doc["stages"].values() for m in s.get("metrics", [])]
    assert metrics == ["reports/metrics.json"]
    names = [next(iter(p)) for p in doc["plots"]]
    assert {"catmouse_curve", "eta_sweep", "gamma_sweep", "game_convergence", "reports/figures"} <= set(names)
    assert not any("plots" in s for s in doc["stages"].values())  # no duplicate default plots


@pytest.mark.parametrize("param, rerun", [
    ("game.gamma", {"minimax"}), ("game.gamma_maximin", {"maximin"}),
    ("magnet.lr", {"magnet"}), ("eval.pgd_steps", None)])
def test_a_param_is_declared_only_by_the_stages_that_read_it(param, rerun):
    st = stages(config.parse(RAW))
    section = param.split(".")[0]
    readers = {n for n, s in st.items() if param in s.get("params", []) or section in s.get("params", [])}
    readers.discard("report")  # the report describes every section of the study
    readers.discard("publish")  # it draws the report's examples figure (PGD against the baseline)
    if rerun is not None:
        assert readers == rerun
    else:
        assert readers and all(n.startswith(("eval-", "sweep-", "ablation-", "strength-")) for n in readers)


def test_a_defense_left_out_reruns_nothing():
    defenders = [d for d in RAW["study"]["defenders"] if d != "magnet"]
    st = stages(params(study__defenders=defenders))
    assert not any("magnet" in s.get("params", []) or any(k.startswith("magnet.") for k in s.get("params", [])
                                                          if isinstance(k, str))
                   for s in st.values())


def test_a_stage_stops_before_work_when_dvc_yaml_is_stale(tmp_path, monkeypatch):
    # preflight.check is what run_stage runs before any work
    from advgame import UserError
    from advgame.pipeline.preflight import check as check_pipeline_current

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(RAW))
    check_pipeline_current()  # no dvc.yaml: nothing to compare
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    check_pipeline_current()  # a hand-written dvc.yaml is the user's own
    (tmp_path / "dvc.yaml").write_text(pipeline.render(config.parse(RAW)))
    check_pipeline_current()
    raw = copy.deepcopy(RAW)
    raw["catmouse"]["rounds"] = 3  # what `dvc exp run -S catmouse.rounds=3` writes
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="dvc.yaml is stale.*make pipeline"):
        check_pipeline_current()


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_declare_every_param_their_pipeline_reads(path):
    # `cp configs/X.yaml params.yaml && make pipeline && dvc repro` must not stop on a missing key
    raw = yaml.safe_load(path.read_text())
    st = stages(config.parse(raw))
    missing = {f"{name}: {key}" for name, s in st.items() for key in s.get("params", [])
               if lookup(raw, key) is KeyError}
    assert not missing, sorted(missing)


def test_every_stage_is_downstream_of_the_params_check():
    # check-params reads the whole params.yaml; prepare (upstream of every other stage) depends
    # on its stamp, so DVC runs the check first after any param change
    st = stages(config.parse(RAW))
    check = st["check-params"]
    assert check["params"][0] == {"params.yaml": None}
    stamp = next(iter(check["outs"][0]))
    assert stamp in st["prepare"]["deps"]
    assert {*pipeline.GENERATOR, "src/advgame/config.py"} <= set(codehash.files("stages/check_params.py"))
    produced = {next(iter(o)) if isinstance(o, dict) else o: n for n, s in st.items() for o in s["outs"]}

    def upstream(name, seen=()):
        ups = {produced[o] for d in st[name].get("deps", []) for o in produced
               if d == o or d.startswith(o + "/")} - {name}
        return ups | {u for x in ups - set(seen) for u in upstream(x, (*seen, *ups))}

    assert all("check-params" in upstream(n) for n in st if n not in ("code", "check-params"))


def test_every_stage_that_trains_or_evaluates_can_come_back_from_dvcs_run_cache():
    # DVC saves a stage's run in its run cache only when no output is persisted and every uncached
    # output is a metric or plot (dvc/stage/cache.py `_can_hash`, Stage.run's `no_cache_outs`)
    st = stages(config.parse(RAW))

    def cacheable(s: dict) -> bool:
        return all(isinstance(o, str) or (not (v := next(iter(o.values()))).get("persist") and v.get("cache", True))
                   for o in s["outs"])

    rerun = {n for n, s in st.items() if not cacheable(s)}
    # only the stages with an output git must hold (and the params check) rerun when a config
    # returns: the headline (it publishes the evaluations, ablations, cat-and-mouse files), publish
    # (the report's inputs) and report (and `code` after an edit of the sources: a second, it
    # restores nothing)
    assert rerun == {"code", "check-params", "headline", "publish", "report"}
    trains = [n for n in st if n in ("prepare", "baseline", "alt", "minimax", "magnet", "pgd-at")
              or n.startswith(("round-", "attackers-", "sweep-", "table5-"))]
    assert trains and not set(trains) & rerun


def test_the_paper_scale_profile_evaluates_at_autoattacks_standard():
    # configs/paper-mnist.yaml is the profile for a GPU box: its cascade is AutoAttack's standard
    # one at AutoAttack's budgets (Croce & Hein 2020), whatever the CPU default affords
    e = config.parse(yaml.safe_load((ROOT / "configs/paper-mnist.yaml").read_text())).eval
    assert e.strong_attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert (e.apgd_targets, e.fab_targets) == (9, 9) and e.square_queries >= 5000
    assert e.apgd_iters >= 100 and e.fab_iters >= 100 and e.apgd_restarts >= 1 and e.n_main == 0


def test_the_quick_profile_trains_the_defaults_models():
    # configs/quick-mnist5k.yaml lightens the evaluation only: every stage that prepares the data
    # or trains a defender (an output under data/, or models/ but models/attackers) reads the same
    # param values in both files, so the two profiles share those models (DVC's run cache) and the
    # quick profile's worst case is the default's models under a lighter evaluation ("Profiles")
    quick_raw = yaml.safe_load((ROOT / "configs/quick-mnist5k.yaml").read_text())
    default, quick = stages(config.parse(RAW)), stages(config.parse(quick_raw))
    trains = [n for n, s in quick.items()
              if any(str(o).startswith(("data/", "models/")) and not str(o).startswith("models/attackers")
                     for out in s["outs"] for o in ([out] if isinstance(out, str) else out))]
    assert {"prepare", "baseline", "round-10", "alt", "minimax", "maximin", "pgd-at", "trades", "magnet"} <= set(trains)
    assert set(trains) <= set(default)
    differ = {f"{n}: {key}" for n in trains for key in quick[n].get("params", [])
              if isinstance(key, str) and lookup(quick_raw, key) != lookup(RAW, key)}  # dict: another file
    assert differ == set(), sorted(differ)
    assert [quick[n]["cmd"] for n in trains] == [default[n]["cmd"] for n in trains]


def test_the_report_reads_only_files_git_holds(tmp_path, monkeypatch):
    # a clone without DVC's cache can rerun the report: each of its dependencies is an output git
    # holds (cache: false) or a file committed beside the code
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports").mkdir()
    (tmp_path / pipeline.SEEDS).write_text("{}")
    st = stages(config.parse(RAW))
    in_git = {next(iter(o)) for s in st.values() for o in [*s["outs"], *s.get("metrics", [])]
              if not isinstance(o, str) and next(iter(o.values())).get("cache") is False}
    assert set(st["report"]["deps"]) <= in_git | {pipeline.SEEDS}
    assert "reports/inputs" in st["report"]["deps"] and "models/baseline.pt" in st["publish"]["deps"]
    # publish reads every stage's report (the training records and hosts the report quotes)
    assert {f"reports/stages/{n}.json" for n in st if n not in ("code", "publish", "report")} <= set(st["publish"]["deps"])
