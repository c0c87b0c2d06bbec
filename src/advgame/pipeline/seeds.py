"""Training-seed variance (docs/protocol.md, "Seeds and determinism"): the study's trained stages rerun for other training
seeds as DVC experiments, and the headline cells of every seed collected into names.SEEDS.

    make seeds                                   # seeds 1 2 of every defender, seeds 3 4 of the paper's
    python -m advgame.pipeline.seeds run --seeds 3 4 --scope paper   # the paper's defenders only
    python -m advgame.pipeline.seeds collect --seeds 1 2  # collect only (the experiments have run)
    python -m advgame.pipeline.seeds bank --seeds 3      # kept in BANK, not names.SEEDS (no report rerun)
    python -m advgame.pipeline.seeds rebase      # the main run replaced, other seeds kept (see rebase)
    dvc exp show --only-changed                  # the seed experiments side by side

Experiment `seed-<s>` is `dvc exp run --queue -S run.seed=<s>`: `run.seed` seeds the global
generators (weight init, dropout) and is added to each training section's own `seed` (data order,
the training attacks' random starts, attacker training; config.derive_seeds), targeting every
`eval-<defender>` and `table5-<defender>` stage, the Sens-FGSM ablations (`ablation-*`: Q2's
controls) and the `headline` stage: DVC reruns exactly the trained stages, the attackers, the
evaluations, Table 5's further etas, the ablations and the headline metrics, nothing else.
`--scope paper`: the paper's defenders (seedscope.PAPER_DEFENDERS) and the ablations only, no headline stage
(it reads every evaluation): about 100 min a seed on a 2-core AVX2 host instead of about 3.5 h.
`data.seed` (the split) and `eval.seeds` (the attacks' random starts) stay fixed: every seed is
judged on the same test images by the same attacks, so the spread is training randomness only.

The main run (the workspace's results) is the first seed of the file. A seed counts for the stages that
ran at its run.seed (seed_stages) with the workspace's code (the script's code hash in the experiment's
dvc.lock) resting on nothing run otherwise (seedscope.ran_this: upstream stages of other params or
code); a defender with any other goes whole, the others stay. The file records each seed's code per
stage, so a clone without the experiments (git refs DVC keeps locally) keeps the stages whose code is
still this code, and `run` leaves them out of the seed's experiment (still_to_run): a seed's paper-scope
stages from one clone and its other defenders from another add up. An experiment whose evaluations ran
this code but lacks a target added since is refreshed (`refresh`: only the missing stages run)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from advgame import UserError, config
from advgame.names import RESULTS, SEEDS, run_path
from advgame.pipeline import warm
from advgame.pipeline.seedscope import (checked, clear_queue, code_md5, eval_stages, measured,  # noqa: F401
                                        paper_defenders, ran_otherwise, ran_this, seed_stages, targets,
                                        workspace_cells)
from advgame.pipeline.seedstats import (cells, kept, load_or_empty, moved, other_host, other_seeds,  # noqa: F401
                                        read_cells, recorded, summarise)  # (seeds.cells, seeds.summarise)

OUT = SEEDS


def training_seed_keys(p: config.Params) -> list[str]:  # run.seed alone (config.derive_seeds; data.seed stays)
    return ["run.seed"]


def exp_name(seed: int) -> str:
    return f"seed-{seed}"


def queue_command(p: config.Params, seed: int, targets: list[str]) -> list[str]:
    sets = [a for k in training_seed_keys(p) for a in ("-S", f"{k}={seed}")]
    return ["dvc", "exp", "run", "--queue", "-n", exp_name(seed), *sets, *targets]


def _git(*args: str, ok: bool = False) -> str:
    r = subprocess.run(["git", *args], capture_output=True, text=True)
    if r.returncode != 0 and not ok:
        raise UserError(f"git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout if r.returncode == 0 else ""


def _sh(*cmd: str, ok: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `cmd`, its output captured in files, not pipes: `dvc queue start` leaves a worker behind
    that inherits them, and a pipe would hold this call until the worker ends (the whole queue)."""
    print("+ " + " ".join(cmd), flush=True)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(cmd, stdout=out, stderr=err, text=True, env=env).returncode
        out.seek(0), err.seek(0)
        r = subprocess.CompletedProcess(cmd, code, out.read(), err.read())
    if r.returncode != 0 and not ok:
        raise UserError(f"{' '.join(cmd[:3])} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def own_code_env() -> dict[str, str]:
    """The queue worker's environment: a relative `src` first on PYTHONPATH, so each stage of a
    queued experiment imports its own copy's code, not the workspace's (the editable install):
    code edited in the workspace during the hours a seed runs must not leak into it."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(["src", *filter(None, [os.environ.get("PYTHONPATH")])])}


def exp_ref(seed: int) -> str:
    """The git ref of experiment seed-<s> whose baseline is HEAD, else the newest one."""
    lines = _git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps").split()
    refs = [r for r in lines if r.rsplit("/", 1)[-1] == exp_name(seed)]
    if not refs:
        raise UserError(f"no experiment {exp_name(seed)}: run `make seeds` (or "
                        f"`python -m advgame.pipeline.seeds run --seeds {seed}`) first")
    head = _git("rev-parse", "HEAD").strip()
    on_head = [r for r in refs if "".join(r.split("/")[2:4]) == head]
    return (on_head or refs)[0]


def commits_back(minimum: int = 3) -> int:
    """How many commits `dvc exp show -n` must list to reach every seed experiment: from HEAD to
    the oldest one's baseline commit (the commit it ran from), at least `minimum`."""
    lines = _git("for-each-ref", "--format=%(refname)", "refs/exps").split()
    bases = {"".join(r.split("/")[2:4]) for r in lines if r.rsplit("/", 1)[-1].startswith("seed-")}
    counts = [int(n) + 1 for b in bases if (n := _git("rev-list", "--count", f"{b}..HEAD", ok=True).strip())]
    return max([minimum, *counts])


def check_same_code(ref: str, seed: int, stages: list[str]) -> dict:
    """Refuse an experiment whose `stages` ran other code than the workspace's; its dvc.lock."""
    theirs = yaml.safe_load(_git("show", f"{ref}:dvc.lock"))
    ours = yaml.safe_load(Path("dvc.lock").read_text())
    if stale := [s for s in stages if code_md5(theirs, s) != code_md5(ours, s)]:
        raise UserError(f"experiment {exp_name(seed)} ran other code than the workspace in "
                        f"{', '.join(stale)}: rerun `python -m advgame.pipeline.seeds run --seeds {seed}`")
    if other := sorted({u for s in stages for u in ran_otherwise(theirs, ours, s)}):
        raise UserError(f"experiment {exp_name(seed)} rests on stages it ran with other params or code than the "
                        f"workspace's ({', '.join(other)}): rerun `python -m advgame.pipeline.seeds run --seeds {seed}`")
    params = yaml.safe_load(_git("show", f"{ref}:params.yaml"))
    if params["run"]["seed"] != seed:
        raise UserError(f"{ref} has run.seed {params['run']['seed']}, not {seed}")
    return theirs


def collect(p: config.Params, seeds: list[int], out: str = OUT) -> dict:
    """The main run's cells and those of each seed in `seeds` (its experiment must exist and have
    run this code), and of the other seeds already in `out` that still qualify: an experiment of
    this code, or, where this clone lacks the experiment (DVC keeps them in local git refs), the
    code `out` recorded for it equal to this code. A seed counts for the stages it ran
    (seed_stages): a `--scope paper` experiment for the paper's defenders only."""
    eta = config.eta_key(p.attack.eta)
    files = measured()
    ours = yaml.safe_load(Path("dvc.lock").read_text())
    old, bank = load_or_empty(out), load_or_empty(BANK)
    earlier = sorted({int(s) for s in [*old.get("seeds", [])[1:], *bank]} - {*seeds, p.run.seed})
    runs, used, sources, code = [workspace_cells(p)], [p.run.seed], {str(p.run.seed): "workspace"}, {}
    for s in sorted([*seeds, *earlier]):  # seeds.json lists them in order, whichever were asked for
        got = _seed_cells(s, files, eta, ours, recorded(s, old, bank, files))
        if isinstance(got, str):
            if s in seeds:
                raise UserError(got)
            print(f"seeds: seed {s} of {out} left out: {got}")
            continue
        runs.append(got[0])
        sources[str(s)], code[str(s)] = got[1], got[2]
        used.append(s)
    obj = {**summarise(runs, used), "eta": eta, "sources": sources, "code": code,
           "training_seed_keys": training_seed_keys(p),
           "note": "per_seed[0] is the main run (the workspace); the others are the seed "
                   "experiments, same split and attack seeds; a cell's `seeds` are those that measured it"}
    Path(out).write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {out}: {len(obj['defenders'])} defenders x seeds {obj['seeds']}")
    return obj


BANK = "reports/seeds-banked.json"  # seed experiments banked where the report could not be rerun (`bank`)


def bank(p: config.Params, seeds: list[int], out: str = BANK) -> dict:
    """Each seed's experiment (it must be here, of this code) with what names.SEEDS and `out` hold
    of it, written to `out`, no stage's dependency: for a clone that cannot rerun the report (DVC's
    cache lacks the main run's outputs). `collect` merges it, stage by stage, while its code is this."""
    eta, files, ours = config.eta_key(p.attack.eta), measured(), yaml.safe_load(Path("dvc.lock").read_text())
    old, banked = load_or_empty(OUT), load_or_empty(out)
    for s in seeds:
        exp_ref(s)  # only an experiment here is banked
        got = _seed_cells(s, files, eta, ours, recorded(s, old, banked, files))
        if isinstance(got, str):
            raise UserError(got)
        banked[str(s)] = {"code": got[2], "cells": got[0], "source": got[1]}
    Path(out).write_text(json.dumps(dict(sorted(banked.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n")
    print(f"wrote {out}: seeds {sorted(int(k) for k in banked)} banked (`collect` merges them into {OUT})")
    return banked


def _seed_cells(s: int, files: dict, eta: str, ours: dict, rec: dict) -> tuple[dict, str, dict] | str:
    """(cells, source, code per stage) of seed `s`, or why it cannot count: its experiment's stages,
    and those its record (`recorded`: an experiment of another scope or clone) holds that still run
    this code and that the experiment did not run (seedstats.kept)."""
    was, kept_code, left = kept(checked(rec, ours, _show), files, {st: code_md5(ours, st) for st in files})
    try:
        ref = exp_ref(s)
    except UserError:
        ref = None
    if ref is None:
        if not rec["code"]:
            return (f"no experiment {exp_name(s)} here and no code recorded for it: run `make seeds` "
                    f"(or `python -m advgame.pipeline.seeds run --seeds {s}`)")
        if not kept_code:
            return f"it ran other code than this in {', '.join(left)}"
        if left:
            print(f"seeds: seed {s}'s {', '.join(left)} left out: other code than this")
        return was, rec["source"] + " [kept: its experiment is not in this clone]", kept_code
    theirs = yaml.safe_load(_git("show", f"{ref}:dvc.lock"))
    ran, gone = ran_this(theirs, ours, seed_stages(theirs, s, list(files)), files)
    if gone:
        print(f"seeds: seed {s}'s {', '.join(gone)} left out: {exp_name(s)} ran other code or params for them")
    if not ran:
        return f"experiment {exp_name(s)} ran none of the measured stages at run.seed {s} with this code and params"
    check_same_code(ref, s, ran)
    outs = {o["path"] for e in theirs["stages"].values() for o in e.get("outs", [])}  # the stage's own, not
    at = lambda f: run_path(f) if run_path(f) in outs else f  # noqa: E731  the headline's published copy
    cells_ = read_cells(files, ran, eta, lambda f: json.loads(_read_at(ref, at(f))))
    source = f"{ref} ({_git('rev-parse', ref).strip()[:10]})"
    mine = {files[st][0] for st in ran}
    extra = {st: c for st, c in kept_code.items() if files[st][0] not in mine}
    if extra:  # e.g. a seed's paper-scope experiment, run in another clone, and its other defenders here
        cells_ |= {d: v for d, v in was.items() if d not in mine}
        source += f" + {len(extra)} stages kept from {rec['source']}"
    return cells_, source, {st: code_md5(theirs, st) for st in ran} | extra


def _show(rev: str, path: str) -> str:
    return _git("show", f"{rev}:{path}", ok=True)


def _read_at(ref: str, path: str) -> str:
    """A results file as an experiment left it: from git, else from DVC's cache (dvc.lock's outputs)."""
    text = _git("show", f"{ref}:{path}", ok=True)
    if text:
        return text
    import dvc.api

    return dvc.api.read(path, rev=ref)


def rebase(p: config.Params, out: str = OUT, drop: tuple[str, ...] = (), drop_attacks: tuple[str, ...] = (),
           host: bool = False) -> dict:
    """The main run's column of `out` replaced by the workspace's after a code change, the other
    seeds kept, marked as from an earlier code and host (`make seeds` replaces them); refused where
    a kept cell's main run moved (seedstats.moved) unless `host` and the run's machines differ from
    the committed results' (seedstats.other_host). `drop`: defenders or ablations, `drop_attacks`:
    attacks, whose cells the change moved: their other seeds leave the file."""
    old, now = json.loads(Path(out).read_text()), workspace_cells(p)
    seeds = old["seeds"]
    if not seeds or seeds[0] != p.run.seed:
        raise UserError(f"{out}: its first seed is {seeds[:1]}, not run.seed {p.run.seed}")
    if (bad := moved(old, now, drop, drop_attacks)) and not host:
        raise UserError(f"the main run moved where {out} keeps other seeds ({', '.join(bad[:4])}): --drop(-attacks) or `make seeds`")
    if bad:
        print(other_host(json.loads(_show("HEAD", RESULTS) or "{}"), load_or_empty(RESULTS), bad))
    runs = [now, *other_seeds(old, drop, drop_attacks)]
    head = _git("rev-parse", "--short", "HEAD").strip()
    sources = {str(p.run.seed): "workspace"}
    for s in seeds[1:]:
        was = old["sources"].get(str(s), "?").split(" [kept")[0]
        sources[str(s)] = f"{was} [kept from {out} by `seeds rebase` at {head}: an earlier code and host]"
    obj = {**summarise(runs, seeds), "eta": old["eta"], "sources": sources, **({"code": old["code"]} if "code" in old else {}),
           "training_seed_keys": training_seed_keys(p), "note": old["note"]}
    Path(out).write_text(json.dumps(obj, indent=1) + "\n")
    print(f"rebased {out}: seed {p.run.seed} from the workspace, seeds {seeds[1:]} kept")
    return obj


def _done(seed: int, stages: list[str]) -> bool:
    """Whether experiment seed-<s> exists and its target stages (all of them) ran the
    workspace's code; a target the experiment lacks counts as not done."""
    try:
        lock = check_same_code(exp_ref(seed), seed, stages)
    except UserError:
        return False
    return seed_stages(lock, seed, stages) == list(stages)  # a stage it did not target: another seed's


STATE = ("params.yaml", "dvc.lock", "reports")  # what an experiment is, besides the code and DVC's cache


def refresh(seeds: list[int], stages: list[str]) -> None:
    """Experiments whose evaluations ran the workspace's code but that lack a target added later:
    each one's params, dvc.lock and results checked out over the workspace's code, where `dvc exp
    run` runs only what it lacks (minutes, even without this machine's run cache). The old
    experiment keeps another name until the new one exists; the workspace goes back to HEAD."""
    if _git("status", "--porcelain", "--untracked-files=no").strip():
        raise UserError("the workspace has uncommitted changes: commit them first (refreshing a seed "
                        "experiment checks its results out into the workspace)")
    for s in seeds:
        name, old, ref = exp_name(s), f"{exp_name(s)}-old", exp_ref(s)
        print(f"seeds: {name} ran this code but lacks some of {', '.join(stages)}; running only those",
              flush=True)
        try:
            _sh("git", "checkout", ref, "--", *STATE)
            _sh("dvc", "checkout", "--force")
            _sh("dvc", "exp", "rename", name, old)
            try:
                _sh("dvc", "exp", "run", "-n", name, *stages)
            except UserError:
                _sh("dvc", "exp", "rename", old, name, ok=True)
                raise
        finally:
            _sh("git", "checkout", "HEAD", "--", *STATE)
            _sh("git", "clean", "-fdq", "--", "reports")
            _sh("dvc", "checkout", "--force")
        _sh("dvc", "exp", "remove", old)


def still_to_run(seed: int, stages: list[str], out: str = OUT) -> list[str]:
    """`stages` less those `out` and BANK hold for `seed` at this code (from an experiment of another
    scope or clone, seedstats.kept): what its experiment must run. A seed's defenders thus add up across
    clones; the headline stage (it reads every evaluation) goes too when any stage is kept."""
    files, ours = measured(), yaml.safe_load(Path("dvc.lock").read_text())
    rec = recorded(seed, load_or_empty(out), load_or_empty(BANK), files)
    _, good, _ = kept(checked(rec, ours, _show), files, {st: code_md5(ours, st) for st in files})
    rest = [st for st in stages if st not in good]
    if len(rest) < len(stages):
        print(f"seeds: {exp_name(seed)}: {len(stages) - len(rest)} stages recorded at this code ({out}, {BANK})", flush=True)
        rest = [st for st in rest if st != "headline"]
    return rest


def run(p: config.Params, seeds: list[int], poll: float = 120.0, force: bool = False, scope: str = "all",
        banked: bool = False) -> None:
    """Queue and run the seed experiments that have not run this code (`scope` "paper": the paper's
    defenders only, about a third of the time), then collect."""
    if p.run.seed in seeds:
        raise UserError(f"seed {p.run.seed} is the main run's (run.seed); choose other seeds")
    stages = targets() if scope == "all" else targets(defenders=paper_defenders(p))
    plan = {s: stages if force else still_to_run(s, stages) for s in seeds}
    todo = [s for s in seeds if plan[s] and (force or not _done(s, plan[s]))]
    for s in sorted(set(seeds) - set(todo)):
        print(f"seeds: {exp_name(s)} already ran this code; kept (--force reruns it)")
    evals = set(eval_stages())
    partial = [] if force else [s for s in todo if (ev := [st for st in plan[s] if st in evals]) and _done(s, ev)]
    for s in partial:
        refresh([s], plan[s])
    todo = [s for s in todo if s not in partial]
    finish = bank if banked else collect
    if not todo:
        finish(p, seeds)
        return
    clear_queue(_sh)
    for s in todo:
        _sh("dvc", "exp", "remove", exp_name(s), ok=True)
        _sh(*queue_command(p, s, plan[s]))
    with warm.server() as w:  # the stages start warm (`advgame warm`), each in its experiment's copy of the code
        _sh("dvc", "queue", "start", "-j", "1", env=w.env(own_code_env()) if w else own_code_env())
        t0 = time.monotonic()
        while True:
            status = _sh("dvc", "queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            waiting = ", ".join(exp_name(s) for s in todo)
            print(f"seeds: {time.monotonic() - t0:.0f}s elapsed, waiting for {waiting}", flush=True)
            time.sleep(poll)
        _sh("dvc", "queue", "stop", ok=True)
    failed = [exp_name(s) for s in todo if not any(exp_name(s) in line and "Success" in line
                                                       for line in status.splitlines())]
    if failed:
        raise UserError(f"seed experiment(s) {', '.join(failed)} did not succeed:\n{status}"
                        f"see `dvc queue logs <name>`")
    finish(p, seeds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["run", "collect", "bank", "rebase", "show", "commits"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--force", action="store_true", help="rerun seeds whose experiment already ran this code")
    ap.add_argument("--scope", choices=["all", "paper"], default="all", help="run: every defender, or the "
                    "paper's (its Table 5 and cat-and-mouse defenders) and the ablations only")
    ap.add_argument("--bank", action="store_true", help=f"run: bank the experiments in {BANK} instead of "
                    f"collecting them into {OUT} (a clone that cannot rerun the report)")
    ap.add_argument("--drop", nargs="*", default=[], help="rebase: defenders whose evaluation changed since the "
                    "kept seeds ran (their other seeds are dropped, not compared)")
    ap.add_argument("--drop-attacks", nargs="*", default=[], help="rebase: attacks whose cells changed for every "
                    "defender since the kept seeds ran (dropped the same way)")
    ap.add_argument("--other-host", action="store_true", help="rebase: the main run reran on another machine "
                    "(results.json's hosts differ from HEAD's): cells it moved keep their other seeds")
    a = ap.parse_args(argv)
    try:
        if a.action == "commits":  # make compare's -n: back to the oldest seed experiment
            print(commits_back())
            return
        p = config.load()
        if a.action == "show":
            stages = targets() if a.scope == "all" else targets(defenders=paper_defenders(p))
            for s in a.seeds:  # what `run` would queue (the stages the file keeps left out)
                rest = stages if a.force else still_to_run(s, stages)
                print(" ".join(queue_command(p, s, rest)) if rest else f"{exp_name(s)}: nothing to run")
        elif a.action in ("collect", "bank"):
            (collect if a.action == "collect" else bank)(p, a.seeds)
        elif a.action == "rebase":
            rebase(p, drop=tuple(a.drop), drop_attacks=tuple(a.drop_attacks), host=a.other_host)
        else:
            run(p, a.seeds, force=a.force, scope=a.scope, banked=a.bank)
    except UserError as e:
        print(f"error [seeds]: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
