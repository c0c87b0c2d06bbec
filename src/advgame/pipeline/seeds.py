"""Training-seed variance (docs/protocol.md, "Seeds and determinism"): the study's trained stages rerun for other training
seeds as DVC experiments, and the headline cells of every seed collected into names.SEEDS.

    make seeds                                   # = python -m advgame.pipeline.seeds run --seeds 1 2
    python -m advgame.pipeline.seeds collect --seeds 1 2  # collect only (the experiments have run)
    python -m advgame.pipeline.seeds rebase      # the main run replaced, other seeds kept (see rebase)
    dvc exp show --only-changed                  # the seed experiments side by side

Experiment `seed-<s>` is `dvc exp run --queue -S run.seed=<s>`: `run.seed` seeds the global
generators (weight init, dropout) and is added to each training section's own `seed` (data order,
the training attacks' random starts, attacker training; config.derive_seeds), targeting every `eval-<defender>` stage, the Sens-FGSM
ablations (`ablation-*`: Q2's controls, judged across seeds like the defenders) and the
`headline` stage, so DVC reruns exactly the trained stages, the attackers, the evaluations, the
ablations and the headline metrics and plot data (each experiment's own, for `dvc exp show` and
`dvc plots diff`), and nothing else (no sweeps, Table 5 or report). `data.seed` (the train/test split) and `eval.seeds` (the attacks'
random starts) stay fixed: every seed is judged on the same test images by the same attacks, so
the spread across seeds is training randomness only. Why experiments and not seed-indexed stages:
the default `dvc repro` stays one seed (59 stages, not ~170), each seed's MLflow runs carry the
experiment's name in the main store, and `dvc exp show` compares the seeds like any other change.

The main run (the workspace's `reports/eval`) is the first seed of the file. A seed experiment is
used only if every evaluation in it ran the workspace's code (its script's code hash in its
dvc.lock equals the workspace's; in a lock from before codehash.json, the md5 of each source
file); otherwise `collect` stops and says which to rerun. An
experiment whose evaluations ran this code but that lacks a target added since is refreshed
(`refresh`: its params, lock and results checked out over the workspace's code, where only the
missing stages run), not retrained.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from advgame import UserError, config
from advgame.names import SEEDS, ablation_path, eval_path
from advgame.pipeline import codehash

OUT = SEEDS


def training_seed_keys(p: config.Params) -> list[str]:
    """The params a seed experiment sets: `run.seed` alone, since it moves every training
    section's seed (config.derive_seeds) and leaves data.seed, the split, where it is."""
    return ["run.seed"]


def exp_name(seed: int) -> str:
    return f"seed-{seed}"


def eval_stages(dvc_yaml: str = "dvc.yaml") -> list[str]:
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return [s for s in stages if s.startswith("eval-")]


def measured(dvc_yaml: str = "dvc.yaml") -> dict[str, tuple[str, str]]:
    """stage -> (name in seeds.json, results file): the evaluations and the ablations."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    out = {s: (s[len("eval-"):], eval_path(s[len("eval-"):])) for s in stages if s.startswith("eval-")}
    out.update({s: (s[len("ablation-"):], ablation_path(s[len("ablation-"):]))
                for s in stages if s.startswith("ablation-")})
    return out


def targets(dvc_yaml: str = "dvc.yaml") -> list[str]:
    """What a seed experiment reproduces: the evaluations and ablations (DVC runs what they
    need) and the headline stage (the experiment's own metrics and plot data)."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return [*measured(dvc_yaml), *(["headline"] if "headline" in stages else [])]


def queue_command(p: config.Params, seed: int, targets: list[str]) -> list[str]:
    sets = [a for k in training_seed_keys(p) for a in ("-S", f"{k}={seed}")]
    return ["dvc", "exp", "run", "--queue", "-n", exp_name(seed), *sets, *targets]


def _git(*args: str, ok: bool = False) -> str:
    r = subprocess.run(["git", *args], capture_output=True, text=True)
    if r.returncode != 0 and not ok:
        raise UserError(f"git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout if r.returncode == 0 else ""


def _sh(*cmd: str, ok: bool = False) -> subprocess.CompletedProcess:
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 and not ok:
        raise UserError(f"{' '.join(cmd[:3])} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


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
    the oldest seed experiment's baseline commit (an experiment sits on the commit it ran from,
    which falls behind as later commits land), at least `minimum`."""
    lines = _git("for-each-ref", "--format=%(refname)", "refs/exps").split()
    bases = {"".join(r.split("/")[2:4]) for r in lines if r.rsplit("/", 1)[-1].startswith("seed-")}
    counts = [int(n) + 1 for b in bases if (n := _git("rev-list", "--count", f"{b}..HEAD", ok=True).strip())]
    return max([minimum, *counts])


def _code_md5(lock: dict, stage: str) -> dict[str, str]:
    """The code a stage ran: its code hash (pipeline.codehash), or each source file's md5 in a
    dvc.lock from before codehash.json."""
    entry = lock["stages"].get(stage, {})
    code = {f"{codehash.FILE}:{k}": v for k, v in entry.get("params", {}).get(codehash.FILE, {}).items()}
    return code | {d["path"]: d.get("md5") for d in entry.get("deps", []) if d["path"].startswith(("src/", "stages/"))}


def check_same_code(ref: str, seed: int, stages: list[str]) -> None:
    theirs = yaml.safe_load(_git("show", f"{ref}:dvc.lock"))
    ours = yaml.safe_load(Path("dvc.lock").read_text())
    stale = [s for s in stages if _code_md5(theirs, s) != _code_md5(ours, s)]
    if stale:
        raise UserError(f"experiment {exp_name(seed)} ran other code than the workspace in "
                        f"{', '.join(stale)}: rerun `python -m advgame.pipeline.seeds run --seeds {seed}`")
    params = yaml.safe_load(_git("show", f"{ref}:params.yaml"))
    if params["run"]["seed"] != seed:
        raise UserError(f"{ref} has run.seed {params['run']['seed']}, not {seed}")


def cells(ev: dict, eta: str) -> dict[str, dict[str, float]]:
    """attack -> eta -> error of one evaluation: clean (eta "0") and every attack at `eta`."""
    out = {}
    for attack, by_eta in ev["results"].items():
        for k in ("0", eta):
            if isinstance(by_eta.get(k), dict) and by_eta[k].get("error") is not None:
                out.setdefault(attack, {})[k] = by_eta[k]["error"]
    return out


def summarise(per_seed: list[dict], seeds: list[int]) -> dict:
    """docs/results.md's shape: defender -> attack -> eta -> {mean, sd, min, max, per_seed}; a cell that
    a seed lacks is left out (it would not be comparable)."""
    out: dict = {}
    for d in per_seed[0]:
        for attack, by_eta in per_seed[0][d].items():
            for eta in by_eta:
                vals = [run.get(d, {}).get(attack, {}).get(eta) for run in per_seed]
                if any(v is None for v in vals):
                    continue
                out.setdefault(d, {}).setdefault(attack, {})[eta] = {
                    "mean": round(statistics.fmean(vals), 4),
                    "sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                    "min": min(vals), "max": max(vals), "per_seed": vals}
    return {"seeds": seeds, "defenders": out}


def collect(p: config.Params, seeds: list[int], out: str = OUT) -> dict:
    eta = config.eta_key(p.attack.eta)
    files = measured()
    stages = list(files)
    runs, sources = [workspace_cells(p)], {str(p.run.seed): "workspace"}
    for s in seeds:
        ref = exp_ref(s)
        check_same_code(ref, s, stages)
        runs.append({d: cells(json.loads(_git("show", f"{ref}:{f}")), eta) for d, f in files.values()})
        sources[str(s)] = f"{ref} ({_git('rev-parse', ref).strip()[:10]})"
    obj = {**summarise(runs, [p.run.seed, *seeds]), "eta": eta, "sources": sources,
           "training_seed_keys": training_seed_keys(p),
           "note": "per_seed[0] is the main run (the workspace); the others are the seed "
                   "experiments, same split and attack seeds"}
    Path(out).write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {out}: {len(obj['defenders'])} defenders x seeds {obj['seeds']}")
    return obj


def workspace_cells(p: config.Params) -> dict:
    """defender -> attack -> eta -> error of the workspace's evaluations and ablations."""
    eta = config.eta_key(p.attack.eta)
    return {d: cells(json.loads(Path(f).read_text()), eta) for d, f in measured().values()}


def rebase(p: config.Params, out: str = OUT, drop: tuple[str, ...] = (), drop_attacks: tuple[str, ...] = ()) -> dict:
    """The main run's column of `out` replaced by the workspace's results, every other seed kept
    from `out` as it is, its source marked as such. For a workspace rerun whose seed experiments
    are not in this clone (DVC keeps experiments in local git refs that a clone does not get) and
    cannot be rerun now: the other seeds then come from the code and host that made them, which
    their `sources` entry says; `make seeds` replaces them. `drop`: defenders (or ablations)
    whose evaluation the code has changed since (another attack, not another seed): their kept
    columns are dropped, so they leave the file until `make seeds` measures them again.
    `drop_attacks`: attacks whose cells the code has changed for every defender (another
    attack or another meaning: the cascade's cells count everything before them); their kept
    seeds are dropped the same way."""
    old = json.loads(Path(out).read_text())
    seeds = old["seeds"]
    if not seeds or seeds[0] != p.run.seed:
        raise UserError(f"{out}: its first seed is {seeds[:1]}, not run.seed {p.run.seed}")
    runs: list[dict] = [workspace_cells(p)] + [{} for _ in seeds[1:]]
    for d, by_attack in old["defenders"].items():
        if d in drop:
            continue
        for attack, by_eta in by_attack.items():
            if attack in drop_attacks:
                continue
            for eta, c in by_eta.items():
                for i, v in enumerate(c["per_seed"][1:], 1):
                    runs[i].setdefault(d, {}).setdefault(attack, {})[eta] = v
    head = _git("rev-parse", "--short", "HEAD").strip()
    sources = {str(p.run.seed): "workspace"}
    for s in seeds[1:]:
        was = old["sources"].get(str(s), "?").split(" [kept")[0]
        sources[str(s)] = f"{was} [kept from {out} by `seeds rebase` at {head}: an earlier code and host]"
    obj = {**summarise(runs, seeds), "eta": old["eta"], "sources": sources,
           "training_seed_keys": training_seed_keys(p), "note": old["note"]}
    Path(out).write_text(json.dumps(obj, indent=1) + "\n")
    print(f"rebased {out}: seed {p.run.seed} from the workspace, seeds {seeds[1:]} kept")
    return obj


def _done(seed: int, stages: list[str]) -> bool:
    """Whether experiment seed-<s> exists and its target stages (all of them) ran the
    workspace's code; a target the experiment lacks counts as not done."""
    try:
        check_same_code(exp_ref(seed), seed, stages)
    except UserError:
        return False
    return True


STATE = ("params.yaml", "dvc.lock", "reports")  # what an experiment is, besides the code and DVC's cache


def refresh(seeds: list[int], stages: list[str]) -> None:
    """Experiments whose evaluations ran the workspace's code but that lack a later target (the
    headline stage or the ablations, added after they ran): each one's params, dvc.lock and
    results are checked out over the workspace's code (and its models from DVC's cache), where
    its evaluations are up to date, and `dvc exp run` there runs only what it lacks (minutes, not
    the ~70 min of a new experiment, also where this machine's DVC run cache lacks the
    experiment's runs, as in a clone). The old experiment is kept under another
    name until the new one exists; the workspace is put back to HEAD afterwards."""
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


def run(p: config.Params, seeds: list[int], poll: float = 120.0, force: bool = False) -> None:
    if p.run.seed in seeds:
        raise UserError(f"seed {p.run.seed} is the main run's (run.seed); choose other seeds")
    stages = targets()
    todo = seeds if force else [s for s in seeds if not _done(s, stages)]
    for s in sorted(set(seeds) - set(todo)):
        print(f"seeds: {exp_name(s)} already ran this code; kept (--force reruns it)")
    partial = [] if force else [s for s in todo if _done(s, eval_stages())]
    if partial:
        refresh(partial, stages)
        todo = [s for s in todo if s not in partial]
    if not todo:
        collect(p, seeds)
        return
    for s in todo:
        _sh("dvc", "exp", "remove", exp_name(s), ok=True)
        _sh(*queue_command(p, s, stages))
    _sh("dvc", "queue", "start", "-j", "1")
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
    collect(p, seeds)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["run", "collect", "rebase", "show", "commits"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--force", action="store_true", help="rerun seeds whose experiment already ran this code")
    ap.add_argument("--drop", nargs="*", default=[], help="rebase: defenders whose evaluation changed since the "
                    "kept seeds ran (their other seeds are dropped, not compared)")
    ap.add_argument("--drop-attacks", nargs="*", default=[], help="rebase: attacks whose cells changed for every "
                    "defender since the kept seeds ran (dropped the same way)")
    a = ap.parse_args(argv)
    try:
        if a.action == "commits":  # make compare's -n: back to the oldest seed experiment
            print(commits_back())
            return
        p = config.load()
        if a.action == "show":
            for s in a.seeds:
                print(" ".join(queue_command(p, s, targets())))
        elif a.action == "collect":
            collect(p, a.seeds)
        elif a.action == "rebase":
            rebase(p, drop=tuple(a.drop), drop_attacks=tuple(a.drop_attacks))
        else:
            run(p, a.seeds, force=a.force)
    except UserError as e:
        print(f"error [seeds]: {e}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
