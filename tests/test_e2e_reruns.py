"""End to end, on a copy of the tiny project test_e2e.py checks (tests/e2e_project.py, built once
per test run): a new cat-and-mouse round reruns only its own stages, a forced stage rerun gives
the same bytes, a colleague pulls the models from a DVC remote instead of training, and a stage
that stops on a bad param keeps the previous results. Independent of test_e2e.py's param changes,
so `make test` runs the two files side by side."""
import hashlib
import subprocess
import sys

import pytest
import yaml

from e2e_project import project_copy, ran, sh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return project_copy(tmp_path_factory, "e2e-reruns")


def test_adding_a_round_reruns_only_that_round_and_its_readers(project):
    d, env, _ = project
    p = yaml.safe_load((d / "params.yaml").read_text())
    p["catmouse"]["rounds"] = 3
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh(sys.executable, "-m", "advgame.pipeline", cwd=d, env=env)
    out = ran(sh("dvc", "repro", cwd=d, env=env))
    assert "round-1" not in out and "round-2" not in out and "baseline" not in out
    # eval-baseline, eval-alt and eval-minimax keep FGSM-1 and FGSM-2 (matrix_rounds [0, 1, 2]):
    # a new last round only adds its own defender's stages
    assert out == {"check-params", "round-3", "catmouse", "attackers-adv-fgsm-3", "eval-adv-fgsm-3", "transfer", "headline", "report"}


def test_a_stage_rerun_gives_identical_bytes(project):
    d, env, _ = project
    files = ("models/baseline.pt", "reports/runs/eval/baseline.json", "reports/transfer.json")

    def digest():
        return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in files}

    before = digest()
    sh("git", "add", "-A", cwd=d, env=env)
    sh("git", "commit", "-qm", "results", "--allow-empty", cwd=d, env=env)
    for stage in ("check-params", "baseline", "eval-baseline", "transfer"):
        sh("dvc", "repro", "-f", "-s", stage, cwd=d, env=env)
    assert digest() == before
    assert "up to date" in sh("dvc", "status", cwd=d, env=env).lower()  # nothing downstream moved
    # and no committed file moved either: the stages' seconds went to the untracked timings
    assert sh("git", "status", "--porcelain", cwd=d, env=env).strip() == ""
    assert (d / "reports/timing/eval-baseline.json").exists()


def test_a_colleague_pulls_the_models_instead_of_training(project, tmp_path):
    # the README's sharing recipe: a DVC remote (here a local folder), push, clone, pull
    d, env, _ = project
    remote = tmp_path / "remote"
    sh("dvc", "remote", "add", "-d", "shared", str(remote), cwd=d, env=env)
    sh("dvc", "push", cwd=d, env=env)
    sh("git", "add", "-A", cwd=d, env=env)
    sh("git", "commit", "-qm", "study and remote", cwd=d, env=env)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(d), str(clone), cwd=tmp_path, env=env)
    env2 = {**env, "PYTHONPATH": str(clone / "src"), "MLFLOW_TRACKING_URI": f"sqlite:///{clone}/mlflow.db"}
    sh("dvc", "pull", cwd=clone, env=env2)
    assert (clone / "models/minimax.pt").read_bytes() == (d / "models/minimax.pt").read_bytes()
    assert "up to date" in sh("dvc", "status", cwd=clone, env=env2).lower()
    assert ran(sh("dvc", "repro", cwd=clone, env=env2)) == set()  # nothing trains again


def test_a_stage_that_fails_on_bad_input_keeps_the_previous_results(project):
    d, env, _ = project
    before = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((d / "reports").rglob("*"))
              if f.is_file()}
    good = (d / "params.yaml").read_text()
    p = yaml.safe_load(good)
    p["eval"]["nn_test"] = 5  # a typo of n_test: the evaluations rerun and stop at their start
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    r = subprocess.run(["dvc", "repro"], cwd=d, env=env, capture_output=True, text=True, timeout=900)
    (d / "params.yaml").write_text(good)
    assert r.returncode != 0 and "unknown key 'eval.nn_test'" in r.stdout + r.stderr
    after = {f: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted((d / "reports").rglob("*"))
             if f.is_file()}
    assert after == before  # persist: DVC left them in place and the stage never replaced them
    assert "up to date" in sh("dvc", "status", cwd=d, env=env).lower()
