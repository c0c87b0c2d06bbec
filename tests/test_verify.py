"""`advgame verify`: a rerun's headline numbers judged against the committed ones within their
seed-level spread (or the images' binomial spread where no seeds were measured)."""
import json
import subprocess

from advgame import cli, config
from advgame.pipeline import verify


def results(**cells):
    """defender -> {attack: error} at eta 0.3 (clean under "0"), n = 1000."""
    return {"defenders": {d: {"results": {a: {("0" if a == "clean" else "0.3"): {"error": e, "n": 1000}}
                                          for a, e in errs.items()}} for d, errs in cells.items()}}


def test_cells_agree_within_the_seed_spread_and_differ_beyond_it():
    committed = results(pgd_at={"clean": 0.03, "worst-case": 0.25, "attnet-curr:mlp": 0.05, "attnet-curr:conv": 0.07})
    seeds = {"seeds": [0, 1, 2], "defenders": {"pgd_at": {"worst-case": {"0.3": {"sd": 0.03}}}}}
    ours = results(pgd_at={"clean": 0.03, "worst-case": 0.31, "attnet-curr:mlp": 0.05, "attnet-curr:conv": 0.20})
    p = config.parse({})
    rows = {r["attack"]: r for r in verify.compare(committed, ours, seeds, p)}
    # worst-case: +0.06 against 1.96 * sqrt(2) * 0.03 = 0.083 -> agree, on the seeds' spread
    assert rows["worst_case"]["agree"] and rows["worst_case"]["basis"] == "seeds"
    assert rows["worst_case"]["tolerance"] == round(1.959964 * 2 ** 0.5 * 0.03, 6)
    # attnet-curr (the family's worst member): 0.07 -> 0.20 on the images' spread -> differ
    assert not rows["attnet_curr"]["agree"] and rows["attnet_curr"]["basis"] == "images"
    assert rows["clean"]["agree"] and rows["clean"]["diff"] == 0
    missing = verify.compare(committed, results(pgd_at={"clean": 0.03}), seeds, p)
    assert [r["agree"] for r in missing if r["attack"] == "worst_case"] == [False]


def test_verify_command_compares_the_workspace_with_a_commit(tmp_path, monkeypatch):
    (tmp_path / "reports").mkdir()
    (tmp_path / "params.yaml").write_text("attack: {eta: 0.3}\n")
    (tmp_path / "reports/results.json").write_text(json.dumps(results(m={"clean": 0.03, "worst-case": 0.5})))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["verify"]) == 0
    (tmp_path / "reports/results.json").write_text(json.dumps(results(m={"clean": 0.03, "worst-case": 0.9})))
    assert cli.main(["verify"]) == 1
    assert cli.main(["verify", "--rev", "nope"]) == 2
