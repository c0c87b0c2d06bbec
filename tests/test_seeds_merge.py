"""A seed's stages add up across clones: what reports/seeds.json keeps of a seed (its stages whose
code is still this code) is left out of the seed's next experiment and merged into what it collects."""
from __future__ import annotations

import json

import pytest
import yaml

from advgame import config
from advgame.pipeline import seeds, seedscope, seedstats

FILES = {"eval-a": ("a", "reports/eval/a.json"), "table5-a": ("a", "reports/table5/a.json"),
         "eval-b": ("b", "reports/eval/b.json")}


def _lock(seed_of: dict[str, int], code: dict[str, str] | None = None):
    return {"stages": {s: {"params": {"params.yaml": {"run.seed": r},
                                      "codehash.json": {"evaluate.hash": (code or {}).get(s, "c1")}}}
                       for s, r in seed_of.items()}}


def _old(code1: dict[str, dict]) -> dict:
    """seeds.json with seeds 0 and 1 of defenders a and b, seed 1's code as given."""
    runs = [{"a": {"pgd": {"0.3": 0.5, "0.4": 0.7}}, "b": {"pgd": {"0.3": 0.9}}},
            {"a": {"pgd": {"0.3": 0.6, "0.4": 0.8}}, "b": {"pgd": {"0.3": 0.95}}}]
    return {**seedstats.summarise(runs, [0, 1]), "eta": "0.3", "sources": {"0": "workspace", "1": "refs/exps/ab/x1/seed-1 (ab)"},
            "code": {"1": code1}}


def test_kept_takes_a_defender_only_while_every_stage_of_it_runs_this_code():
    now = {"eval-a": {"h": "1"}, "table5-a": {"h": "1"}, "eval-b": {"h": "1"}}
    cells, good, left = seedstats.kept(seedstats.record(_old(now), 1), FILES, now)
    assert cells == {"a": {"pgd": {"0.3": 0.6, "0.4": 0.8}}, "b": {"pgd": {"0.3": 0.95}}} and good == now and left == []
    changed = {**now, "table5-a": {"h": "2"}}  # a's Table 5 stage runs other code now: a's cells all go
    cells, good, left = seedstats.kept(seedstats.record(_old(now), 1), FILES, changed)
    assert cells == {"b": {"pgd": {"0.3": 0.95}}} and set(good) == {"eval-b"} and left == ["eval-a", "table5-a"]
    assert seedstats.kept(seedstats.record(_old(now), 2), FILES, now) == ({}, {}, [])  # a seed the file lacks


def test_a_banked_record_goes_over_the_files_defender_by_defender():
    now = {"eval-a": {"h": "1"}, "table5-a": {"h": "1"}, "eval-b": {"h": "1"}}
    old = seedstats.record(_old({"eval-a": now["eval-a"], "table5-a": now["table5-a"]}), 1)  # a's stages
    banked = {"code": {"eval-b": {"h": "1"}}, "cells": {"b": {"pgd": {"0.3": 0.85}}}, "source": "refs/exps/y/seed-1 (cd)"}
    rec = seedstats.union(old, banked, FILES)
    assert set(rec["code"]) == set(now) and rec["cells"]["a"] == old["cells"]["a"] and rec["cells"]["b"] == banked["cells"]["b"]
    assert rec["source"] == "refs/exps/y/seed-1 (cd) + refs/exps/ab/x1/seed-1 (ab)"
    again = seedstats.union(rec, {**banked, "code": {"eval-a": {"h": "2"}}, "cells": {"a": {"pgd": {"0.3": 0.1}}}}, FILES)
    assert again["cells"]["a"] == {"pgd": {"0.3": 0.1}} and "table5-a" not in again["code"]  # a, replaced whole
    assert seedstats.union(seedstats.record({}, 1), banked, FILES) == banked


def _git(exp: dict | None = None):
    """git for a workspace whose seed experiments' baseline commits (named in their refs) hold this
    study's dvc.lock at seed 0, and, given `exp`, experiment seed-1's files."""
    def git(*a, ok=False):
        if a[0] != "show":
            return "fedcba9876"
        rev, f = a[1].split(":", 1)
        if not rev.startswith("refs/"):
            return yaml.safe_dump(_lock({s: 0 for s in FILES})) if f == "dvc.lock" else ""
        return yaml.safe_dump(exp[f]) if f.endswith((".lock", ".yaml")) else json.dumps(exp[f])
    return git


def _workspace(tmp_path, monkeypatch, code1):
    monkeypatch.setattr(seeds, "_git", _git())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: {} for s in [*FILES, "headline"]}}))
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock({s: 0 for s in FILES})))
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/table5").mkdir(parents=True)
    for f, obj in {"reports/eval/a.json": {"pgd": {"0.3": 0.5}}, "reports/table5/a.json": {"pgd": {"0.4": 0.7}},
                   "reports/eval/b.json": {"pgd": {"0.3": 0.9}}}.items():
        (tmp_path / f).write_text(json.dumps({"results": {k: {e: {"error": v} for e, v in by.items()}
                                                          for k, by in obj.items()}}))
    (tmp_path / "reports/seeds.json").write_text(json.dumps(_old(code1)))


def test_a_seeds_next_experiment_runs_only_what_the_file_does_not_keep(tmp_path, monkeypatch):
    ours = seeds.code_md5(_lock({"eval-a": 0}), "eval-a")
    _workspace(tmp_path, monkeypatch, {"eval-a": ours, "table5-a": ours})  # seed 1: a's stages (paper scope)
    every = ["eval-a", "table5-a", "eval-b", "headline"]
    assert seeds.still_to_run(1, every) == ["eval-b"]  # no headline: it would rerun every evaluation
    assert seeds.still_to_run(2, every) == every  # nothing kept of seed 2
    assert seeds.still_to_run(1, ["eval-a", "table5-a"]) == []  # the paper scope of seed 1: done
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock({s: 0 for s in FILES}, {"eval-a": "c2"})))
    assert seeds.still_to_run(1, every) == every  # a's evaluation changed since: a runs again


def _experiment_of_b(monkeypatch):
    """Experiment seed-1 here: it ran defender b only (0.85), a's stages are the baseline commit's."""
    exp = {"dvc.lock": _lock({"eval-a": 0, "table5-a": 0, "eval-b": 1}), "params.yaml": {"run": {"seed": 1}},
           "reports/eval/b.json": {"results": {"pgd": {"0.3": {"error": 0.85}}}}}
    monkeypatch.setattr(seeds, "_git", _git(exp))
    monkeypatch.setattr(seeds, "exp_ref", lambda s: "refs/exps/ef/gh/seed-1")


def test_collect_merges_an_experiment_with_the_stages_the_file_keeps_of_its_seed(tmp_path, monkeypatch):
    ours = seeds.code_md5(_lock({"eval-a": 0}), "eval-a")
    _workspace(tmp_path, monkeypatch, {"eval-a": ours, "table5-a": ours})
    _experiment_of_b(monkeypatch)
    obj = seeds.collect(config.parse({}), [1])
    assert obj["defenders"]["a"]["pgd"]["0.3"]["per_seed"] == [0.5, 0.6]  # kept from the file
    assert obj["defenders"]["a"]["pgd"]["0.4"]["per_seed"] == [0.7, 0.8]
    assert obj["defenders"]["b"]["pgd"]["0.3"]["per_seed"] == [0.9, 0.85]  # the new experiment's
    assert set(obj["code"]["1"]) == {"eval-a", "table5-a", "eval-b"}
    assert obj["sources"]["1"] == "refs/exps/ef/gh/seed-1 (fedcba9876) + 2 stages kept from refs/exps/ab/x1/seed-1 (ab)"
    # collected again, the merged file keeps both parts while their code is this code
    monkeypatch.setattr(seeds, "exp_ref", lambda s: (_ for _ in ()).throw(seeds.UserError("none")))
    again = seeds.collect(config.parse({}), [])
    assert again["defenders"] == obj["defenders"] and set(again["code"]["1"]) == set(obj["code"]["1"])


def test_a_command_that_leaves_a_process_behind_returns_with_its_output():
    """`dvc queue start` leaves its worker running with the command's output open: `_sh` must
    return when the command ends (the worker still alive), not when the worker does."""
    import os
    import signal
    r = seeds._sh("sh", "-c", "sleep 60 & echo $!; echo err >&2")
    pid = int(r.stdout.split()[0])
    try:
        os.kill(pid, 0)  # the process left behind is still running: _sh did not wait for it
        assert r.returncode == 0 and r.stderr == "err\n"
    finally:
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(seeds.UserError, match="boom"):
        seeds._sh("sh", "-c", "echo boom >&2; exit 3")


def test_a_banked_seed_leaves_seeds_json_alone_and_collect_merges_it(tmp_path, monkeypatch):
    ours = seeds.code_md5(_lock({"eval-a": 0}), "eval-a")
    _workspace(tmp_path, monkeypatch, {"eval-a": ours, "table5-a": ours})  # seed 1: a's stages
    before = (tmp_path / "reports/seeds.json").read_text()
    _experiment_of_b(monkeypatch)
    banked = seeds.bank(config.parse({}), [1])
    assert (tmp_path / "reports/seeds.json").read_text() == before  # the report's input is untouched
    assert set(banked["1"]["code"]) == {"eval-a", "table5-a", "eval-b"}
    assert json.loads((tmp_path / seeds.BANK).read_text()) == banked
    monkeypatch.setattr(seeds, "exp_ref", lambda s: (_ for _ in ()).throw(seeds.UserError("none")))
    assert seeds.still_to_run(1, ["eval-a", "table5-a", "eval-b", "headline"]) == []  # nothing left to run
    obj = seeds.collect(config.parse({}), [])  # a clone without the experiment: the bank and the file
    assert obj["defenders"]["b"]["pgd"]["0.3"]["per_seed"] == [0.9, 0.85]
    assert obj["defenders"]["a"]["pgd"]["0.3"]["per_seed"] == [0.5, 0.6] and obj["seeds"] == [0, 1]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(_lock({s: 0 for s in FILES}, {"eval-b": "c2"})))
    assert "b" not in seeds.collect(config.parse({}), [])["defenders"]  # b's code changed: its banked seed goes


def test_run_with_bank_banks_instead_of_collecting(monkeypatch):
    done = []
    monkeypatch.setattr(seeds, "targets", lambda: ["eval-a"])
    monkeypatch.setattr(seeds, "still_to_run", lambda s, stages: stages)
    monkeypatch.setattr(seeds, "_done", lambda s, stages: True)
    monkeypatch.setattr(seeds, "collect", lambda p, s: done.append(("collect", s)))
    monkeypatch.setattr(seeds, "bank", lambda p, s: done.append(("bank", s)))
    seeds.run(config.parse({}), [3], banked=True)
    seeds.run(config.parse({}), [3])
    assert done == [("bank", [3]), ("collect", [3])]


def test_collect_reads_the_publish_stages_copy_in_a_clone_without_dvcs_cache(tmp_path, monkeypatch):
    ours = seeds.code_md5(_lock({"eval-a": 0}), "eval-a")
    _workspace(tmp_path, monkeypatch, {"eval-a": ours, "table5-a": ours})
    from advgame.report.publish import INPUTS
    copy = tmp_path / INPUTS / "reports/table5/a.json"  # Table 5's file is in DVC's cache: git has its copy
    copy.parent.mkdir(parents=True)
    (tmp_path / "reports/table5/a.json").rename(copy)
    monkeypatch.setattr(seeds, "exp_ref", lambda s: (_ for _ in ()).throw(seeds.UserError("none")))
    obj = seeds.collect(config.parse({}), [])
    assert obj["defenders"]["a"]["pgd"]["0.4"]["per_seed"] == [0.7, 0.8]
    copy.unlink()
    with pytest.raises(seeds.UserError, match="no main run here"):
        seeds.collect(config.parse({}), [])


def test_a_task_left_running_by_a_killed_worker_is_cleared_before_queueing(monkeypatch):
    # a session that ends kills the queue's worker, not its record: the task stays "Running", and
    # `run`, which waits while anything runs, would wait for it forever
    stale = ("Task     Name    Created    Status\na8eed34  seed-4  11:01 AM   Running\n"
             "4713f90  seed-4  12:30 PM   Failed\n\nWorker status: 0 active, 0 idle\n")
    assert seedscope.stale_tasks(stale) == ["a8eed34"]
    assert seedscope.stale_tasks(stale.replace("0 active", "1 active")) == []  # a live worker's task is running
    calls = []

    def sh(*cmd, ok=False, env=None):
        calls.append(cmd)
        out = {("queue", "status"): stale if len(calls) == 1 else "seed-4  Success\n"}.get(cmd[1:3], "")
        return type("R", (), {"stdout": out})()
    monkeypatch.setattr(seeds, "_sh", sh)
    monkeypatch.setattr(seeds, "targets", lambda **k: ["eval-a"])
    monkeypatch.setattr(seeds, "still_to_run", lambda s, stages: stages)
    monkeypatch.setattr(seeds, "_done", lambda s, stages: False)
    monkeypatch.setattr(seeds, "bank", lambda p, s: None)
    monkeypatch.setattr(seeds.warm, "server", lambda: __import__("contextlib").nullcontext(None))
    seeds.run(config.parse({}), [4], poll=0, banked=True)
    assert calls[:3] == [("dvc", "queue", "status"), ("dvc", "queue", "kill", "a8eed34"),
                         ("dvc", "queue", "remove", "--success", "--failed")]  # a queued task stays
    assert ("dvc", "queue", "start", "-j", "1") in calls
