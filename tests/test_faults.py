"""Fault injection (issue 18, all but tracking): every probe of a bad input a user can cause, and
for each the exit code, the one-line message (what it names) and that the files that were there
before are still there, byte-identical. Unit-level probes call the check-params stage and
run_stage in-process; the DVC probes share one tiny project. Tracking faults are in
tests/test_tracking*.py.

Probes kept in the module test files: YAML line/column, data.root, bool for a number
(test_config.py); wrong shape, wrong kind, random bytes, truncated, pickle payload, unwritable
folder, producer_hint (test_artifacts.py); truncated or foreign split (test_data.py)."""
import copy
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from advgame import artifacts, config
from advgame.models import (
    attacker_meta,
    build_attacker,
    build_classifier,
    classifier_meta,
)
from advgame.pipeline import generator as pipeline
from advgame.pipeline.preflight import STAMP, STAMP_TEXT
from advgame.pipeline.stage import run_stage

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT = yaml.safe_load((ROOT / "params.yaml").read_text())


def digest(folder: Path) -> dict:
    """sha256 of every file under `folder` (what must survive a failed run)."""
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file() and ".dvc" not in f.parts and ".git" not in f.parts}


def one_line(err: str, stage: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error [{stage}]: "), err
    return lines[0]


def load_check_stage():
    spec = importlib.util.spec_from_file_location("check_params", ROOT / "stages/check_params.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with the default params, its generated dvc.yaml, a passed check and previous
    results under reports/ (copied from the committed study)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULT, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(pipeline.render(config.parse(DEFAULT)))
    shutil.copytree(ROOT / "reports/eval", tmp_path / "reports/eval")
    shutil.copy(ROOT / "reports/results.json", tmp_path / "reports/results.json")
    assert load_check_stage().main() == 0
    assert (tmp_path / STAMP).read_text() == STAMP_TEXT
    return tmp_path


def write_params(change):
    raw = copy.deepcopy(DEFAULT)
    change(raw)
    Path("params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def section(name, **kv):
    return lambda r: r[name].update(kv)


BAD_PARAMS = {
    "unknown top-level key": (lambda r: r.update(bogus=1), ["params.yaml", "unknown key 'bogus'", "allowed keys"]),
    "unknown key in a section": (section("eval", nn_test=5), ["unknown key 'eval.nn_test'", "n_test"]),
    "wrong type": (section("run", seed="abc"), ["'run.seed'", "'abc'"]),
    "negative budget": (section("attack", eta=-0.1), ["'attack.eta'", "-0.1"]),
    "zero budget": (section("attack", eta=0), ["'attack.eta'"]),
    "empty eta list": (section("eval", etas=[]), ["'eval.etas'", "non-empty"]),
    "unknown defender": (section("study", defenders=["baseline", "fgsm-att"]),
                         ["'study.defenders'", "allowed values", "fgsm-at"]),
    "unknown item in a list": (section("attacker", archs=["mlp", "lstm"]), ["'attacker.archs'", "unet"]),
    "bool for a number": (section("baseline", epochs=True), ["'baseline.epochs'", "true/false"]),
    "data.root outside the project": (section("data", root="../escape"), ["'data.root'", "absolute"]),
    "shape param: rounds (dvc exp run -S)": (section("catmouse", rounds=3),
                                             ["dvc.yaml is stale", "removes stage(s) round-4", "make pipeline"]),
    "shape param: defenders": (section("study", defenders=["baseline"]),
                               ["dvc.yaml is stale", "removes stage(s) round-1", "make pipeline"]),
    "shape param: gamma sweep": (section("game", gamma_sweep=[0.01, 0.1, 0.25, 1.0, 10.0]),
                                 ["dvc.yaml is stale", "adds stage(s) sweep-minimax-g0p25", "make pipeline"]),
}


@pytest.mark.parametrize("probe", list(BAD_PARAMS))
def test_check_params_stops_every_bad_param_in_one_line_and_keeps_every_file(project, probe, capsys):
    change, names = BAD_PARAMS[probe]
    capsys.readouterr()
    write_params(change)
    before = {k: v for k, v in digest(project).items() if k != "params.yaml"}
    assert load_check_stage().main() == 2
    line = one_line(capsys.readouterr().err, "check-params")
    for n in names:
        assert n in line, (n, line)
    assert {k: v for k, v in digest(project).items() if k != "params.yaml"} == before


def test_check_params_yaml_error_names_line_and_column(project, capsys):
    capsys.readouterr()
    Path("params.yaml").write_text("run:\n  seed: 0\n eval: {}\n")
    before = digest(project)
    assert load_check_stage().main() == 2
    assert "params.yaml: not valid YAML at line 3, column" in one_line(capsys.readouterr().err, "check-params")
    assert digest(project) == before


def test_the_real_check_script_exits_2_and_never_imports_torch(project):
    # the script DVC runs: exit 2 and one line; no torch, because it runs after every param change
    write_params(lambda r: r.update(bogus=1))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "stages/check_params.py")], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2
    one_line(r.stderr, "check-params")
    write_params(lambda r: None)
    r = subprocess.run([sys.executable, "-c", "import runpy, sys; g = runpy.run_path(sys.argv[1]); "
                        "rc = g['main'](); print(rc, 'torch' in sys.modules)",
                        str(ROOT / "stages/check_params.py")], env=env, capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "0 False", r.stdout + r.stderr


# ---------------------------------------------------------------- stages meeting bad files

@pytest.fixture
def stage_dir(tmp_path, monkeypatch):
    """Default params, no dvc.yaml (run_stage then checks params only), previous results."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(DEFAULT, sort_keys=False))
    shutil.copytree(ROOT / "reports/eval", tmp_path / "reports/eval")
    (tmp_path / "models").mkdir()
    return tmp_path


def run_failing(name, body, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_stage(name, body, sections=["run"])
    assert e.value.code == 2
    return one_line(capsys.readouterr().err, name)


def load_baseline(ctx):
    from advgame.defenses.loading import load_defender

    load_defender("baseline", "models/baseline.pt")


CALLS = []


class Payload:
    def __reduce__(self):
        return (CALLS.append, (1,))  # what a malicious pickle does: call something on load


def write_random(p):
    p.write_bytes(os.urandom(4096))


def write_pickle(p):
    torch.save({"state_dict": {}, "meta": {}, "payload": Payload()}, p)


def write_truncated(p):
    artifacts.save_checkpoint(build_classifier("smallcnn"), classifier_meta("smallcnn", (1, 28, 28), 10), p)
    p.write_bytes(p.read_bytes()[:5000])


def write_wrong_shape(p):
    artifacts.save_checkpoint(build_classifier("smallcnn", classes=7), classifier_meta("smallcnn", (1, 28, 28), 10), p)


def write_attacker(p):
    artifacts.save_checkpoint(build_attacker("mlp", (1, 28, 28), 8), attacker_meta("mlp", (1, 28, 28), 8, 4), p)


BAD_CHECKPOINTS = {
    "random bytes": (write_random, ["models/baseline.pt: corrupt", "nothing in it was executed"]),
    "pickle payload": (write_pickle, ["models/baseline.pt: corrupt", "nothing in it was executed"]),
    "truncated": (write_truncated, ["models/baseline.pt: corrupt"]),
    "wrong shape": (write_wrong_shape, ["models/baseline.pt: checkpoint does not fit architecture 'smallcnn'",
                                        "tensor 'classifier.5.weight' has shape [7, 200] in the file, "
                                        "the model expects [10, 200]"]),
    "wrong kind": (write_attacker, ["models/baseline.pt: an attacker network (AttNet) checkpoint where "
                                    "a classifier (defender) is expected"]),
}


@pytest.mark.parametrize("probe", list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_stops_the_stage_in_one_line(stage_dir, probe, capsys):
    write, names = BAD_CHECKPOINTS[probe]
    write(stage_dir / "models/baseline.pt")
    before = digest(stage_dir)
    CALLS.clear()
    line = run_failing("eval-baseline", load_baseline, capsys)
    for n in names:
        assert n in line, (n, line)
    assert not CALLS  # weights_only: the payload never ran
    assert digest(stage_dir) == before


def test_truncated_data_stops_the_stage_in_one_line(stage_dir, capsys):
    from advgame.data import load_split

    split = stage_dir / "data/prepared/train.pt"
    artifacts.save_torch({"x": torch.zeros(50, 1, 28, 28), "y": torch.zeros(50, dtype=torch.int64)}, split)
    split.write_bytes(split.read_bytes()[:1000])
    before = digest(stage_dir)
    line = run_failing("baseline", lambda ctx: load_split("data/prepared", "train"), capsys)
    assert "data/prepared/train.pt: corrupt" in line
    assert digest(stage_dir) == before


def test_a_read_only_output_folder_is_one_line_naming_the_path(stage_dir, capsys, monkeypatch):
    out = "reports/eval/baseline.json"

    def refuse(*a, dir=None, **k):
        raise PermissionError(13, "Permission denied", f"{dir}/.tmp")

    monkeypatch.setattr(artifacts.tempfile, "mkstemp", refuse)  # root ignores chmod: simulate it
    before = digest(stage_dir)
    line = run_failing("eval-baseline", lambda ctx: artifacts.save_json({"defender": "x"}, out), capsys)
    assert f"{out}: cannot write (Permission denied); make reports/eval writable" in line
    assert digest(stage_dir) == before


def test_an_unwritable_path_outside_artifacts_is_one_line_too(stage_dir, capsys):
    def body(ctx):
        raise PermissionError(13, "Permission denied", "reports/figures/x.png")  # e.g. a plotting library

    line = run_failing("report", body, capsys)
    assert "cannot write reports/figures/x.png (Permission denied)" in line


def test_a_defender_valid_but_not_built_names_a_stage_that_exists(tmp_path, capsys, monkeypatch):
    # fgsm-at is a valid defender; the pipeline was generated without it
    monkeypatch.chdir(tmp_path)  # the generator renders the project in the working directory
    raw = copy.deepcopy(DEFAULT)
    raw["study"]["defenders"] = ["baseline"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text(pipeline.render(config.parse(raw)))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "stages/evaluate.py"), "--defender", "fgsm-at",
                        "--data", "data/prepared", "--model", "models/fgsm-at.pt",
                        "--attackers", "models/attackers/fgsm-at", "--out", "reports/eval/fgsm-at.json"],
                       cwd=tmp_path,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2
    line = one_line(r.stderr, "eval-fgsm-at")
    assert "models/fgsm-at.pt: not found" in line and "study.defenders" in line and "make pipeline" in line
    stages = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]
    named = set(re.findall(r"dvc repro ([\w-]+)", line))
    assert named <= set(stages), named


# ---------------------------------------------------------------- the DVC probes, one tiny project

TINY = {
    "study": {"defenders": ["baseline", "catmouse"]},
    "run": {"device": "cpu", "threads": 1},
    "data": {"test_fraction": 0.04, "train_n": 300, "val_n": 100},
    "catmouse": {"rounds": 1, "matrix_rounds": [0, 1]},
    "game": {"gamma_sweep": []},
    "table5": {"etas": []},
}


def sh(*cmd, cwd, env, ok=True):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def ran(out: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, warm_server):
    """The tiny pipeline's first stages run (check-params, prepare) and committed, with the
    committed study's results under reports/ as the previous results that must survive."""
    d = tmp_path_factory.mktemp("faults")
    for sub in ("stages", "src"):
        shutil.copytree(ROOT / sub, d / sub, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (d / "params.yaml").write_text(yaml.safe_dump(config.parse(TINY).model_dump(), sort_keys=False))
    env = warm_server.env({**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "ADVGAME_TRACKING": "off",
                           "PYTHONPATH": str(d / "src"), "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
                           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    sh("git", "init", "-q", cwd=d, env=env)
    sh("dvc", "init", "-q", cwd=d, env=env)
    sh(sys.executable, "-m", "advgame.pipeline", cwd=d, env=env)
    assert ran(sh("dvc", "repro", "prepare", cwd=d, env=env).stdout) == {"code", "check-params", "prepare"}
    for sub in ("eval", "catmouse", "figures"):
        shutil.copytree(ROOT / "reports" / sub, d / "reports" / sub, dirs_exist_ok=True)
    for f in ("report.md", "results.json", "metrics.json"):  # committed to git (a fresh clone has them)
        shutil.copy(ROOT / "reports" / f, d / "reports" / f)
    sh("git", "add", "-A", cwd=d, env=env)
    sh("git", "commit", "-qm", "init", cwd=d, env=env)
    return d, env


@pytest.mark.e2e
@pytest.mark.parametrize("cmd, says", [
    (["dvc", "exp", "run", "-S", "catmouse.rounds=3"], "adds stage(s) round-2, round-3"),
    (["dvc", "exp", "run", "-S", "study.defenders=[baseline]"], "removes stage(s) round-1"),
    (["dvc", "exp", "run", "-S", "attack.eta=-0.1"], "bad value for 'attack.eta'"),
])
def test_dvc_exp_run_with_a_shape_or_bad_param_stops_before_any_stage_work(tiny, cmd, says):
    d, env = tiny
    before = digest(d / "reports")
    r = sh(*cmd, cwd=d, env=env, ok=False)
    sh("git", "checkout", "-q", "params.yaml", cwd=d, env=env)  # -S edited it in the workspace
    out = r.stdout + r.stderr
    assert r.returncode != 0 and ran(out) == {"check-params"}, out  # nothing but the check ran
    errors = [ln for ln in out.splitlines() if ln.startswith("error [check-params]")]
    assert len(errors) == 1 and says in errors[0], out
    assert "failed to reproduce 'check-params'" in out
    assert digest(d / "reports") == before
    assert "up to date" in sh("dvc", "status", "prepare", cwd=d, env=env).stdout.lower()


@pytest.mark.e2e
def test_an_unknown_top_level_key_stops_dvc_repro(tiny):
    d, env = tiny
    before = digest(d / "reports")
    good = (d / "params.yaml").read_text()
    (d / "params.yaml").write_text(good + "bogus: 1\n")
    r = sh("dvc", "repro", cwd=d, env=env, ok=False)
    (d / "params.yaml").write_text(good)
    assert r.returncode != 0 and ran(r.stdout) == {"check-params"}
    assert "error [check-params]: params.yaml: unknown key 'bogus'" in r.stdout + r.stderr
    assert digest(d / "reports") == before
    assert "up to date" in sh("dvc", "status", "prepare", cwd=d, env=env).stdout.lower()


@pytest.mark.e2e
def test_a_valid_param_change_reruns_only_the_check(tiny):
    d, env = tiny
    good = (d / "params.yaml").read_text()
    p = yaml.safe_load(good)
    p["eval"]["pgd_steps"] = 6
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        r = sh("dvc", "repro", "prepare", cwd=d, env=env)
        assert ran(r.stdout) == {"check-params"}  # the stamp's bytes did not change
        assert "Stage 'prepare' didn't change" in r.stdout
    finally:
        (d / "params.yaml").write_text(good)
