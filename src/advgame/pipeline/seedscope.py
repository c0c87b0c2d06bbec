"""What a seed experiment (advgame.pipeline.seeds) targets, read from dvc.yaml, which stages
of an experiment's dvc.lock ran at its seed, and whether what they rest on is this study's."""
from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from advgame import UserError, config
from advgame.pipeline import codehash
from advgame.names import ablation_path, eval_path, final_defenders, round_model, table5_path


def eval_stages(dvc_yaml: str = "dvc.yaml") -> list[str]:
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return [s for s in stages if s.startswith("eval-")]


# the paper's defenders (its Table 5 rows, the cat-and-mouse game of its Fig. 1): `--scope paper`
PAPER_DEFENDERS = ("baseline", "catmouse", "fgsm-at", "sens-fgsm", "alt", "minimax", "maximin")
KINDS = {"eval-": eval_path, "table5-": table5_path, "ablation-": ablation_path}


def paper_defenders(p: config.Params) -> list[str]:
    """The paper's defenders among this study's final defenders (catmouse: its last round)."""
    keep = set(PAPER_DEFENDERS) | ({round_model(p.catmouse.rounds)} if p.catmouse.rounds > 0 else set())
    return [d for d in final_defenders(p) if d in keep]


def measured(dvc_yaml: str = "dvc.yaml") -> dict[str, tuple[str, str]]:
    """stage -> (name in seeds.json, results file): the evaluations, Table 5's further etas (a
    defender's cells beside its evaluation's) and the ablations."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    return {s: (s[len(k):], path(s[len(k):])) for k, path in KINDS.items() for s in stages if s.startswith(k)}


def targets(dvc_yaml: str = "dvc.yaml", defenders: list[str] | None = None) -> list[str]:
    """What a seed experiment reproduces: the evaluations, Table 5 stages and ablations (DVC runs
    what they need) and the headline stage (the experiment's own metrics and plot data).
    `defenders`: only those defenders' evaluations and Table 5 stages, and the ablations (Sens-FGSM's
    controls); no headline stage, which reads every evaluation."""
    stages = yaml.safe_load(Path(dvc_yaml).read_text())["stages"]
    if defenders is not None:
        return [s for s, (d, _) in measured(dvc_yaml).items() if s.startswith("ablation-") or d in defenders]
    return [*measured(dvc_yaml), *(["headline"] if "headline" in stages else [])]


def seed_stages(lock: dict, seed: int, stages: list[str]) -> list[str]:
    """The stages of `stages` that a dvc.lock says ran at training seed `seed` (their `run.seed`
    param): a stage an experiment did not target keeps its baseline commit's entry, of another
    seed. A lock entry without run.seed (none of today's measured stages) counts as run."""
    out = []
    for s in stages:
        entry = lock["stages"].get(s)
        if entry is not None and entry.get("params", {}).get("params.yaml", {}).get("run.seed", seed) == seed:
            out.append(s)
    return out


def upstream(lock: dict, stage: str) -> list[str]:
    """`stage` and every stage of `lock` (a dvc.lock) whose outputs it reads, directly or not."""
    stages = lock["stages"]
    made = {o["path"].rstrip("/"): s for s, e in stages.items() for o in e.get("outs", [])}
    seen, todo = set(), [stage]
    while todo:
        s = todo.pop()
        if s in seen or s not in stages:
            continue
        seen.add(s)
        for d in (d["path"].rstrip("/") for d in stages[s].get("deps", [])):
            todo += [st for out, st in made.items() if d == out or d.startswith(out + "/") or out.startswith(d + "/")]
    return sorted(seen)


def _settings(entry: dict) -> tuple:
    """What a dvc.lock entry ran, its training seed aside: the command, the params (code hashes
    included: codehash.json is a params file) but run.seed, the md5 of any source file it lists."""
    params = {}
    for f, kv in entry.get("params", {}).items():
        kv = {k: v for k, v in kv.items() if k != "run.seed"}
        if isinstance(kv.get("run"), dict):
            kv["run"] = {k: v for k, v in kv["run"].items() if k != "seed"}
        params[f] = kv
    return (entry.get("cmd"), params,
            {d["path"]: d.get("md5") for d in entry.get("deps", []) if d["path"].startswith(("src/", "stages/"))})


def ran_otherwise(theirs: dict, ours: dict, stage: str) -> list[str]:
    """The stages `stage` rests on (itself and its upstream in `ours`, a dvc.lock) that another run
    (`theirs`, its dvc.lock) lacks or ran with another command, code or params than `ours`, run.seed
    aside, without ending in the same outputs: [] where that run's `stage` is this study's at
    another training seed. A changed training budget, attack budget or training code upstream thus
    counts, not only the stage's own code."""
    t, o = theirs.get("stages", {}), ours["stages"]
    outs = lambda e: {x["path"]: x.get("md5") for x in e.get("outs", [])}  # noqa: E731
    return [s for s in upstream(ours, stage)
            if s not in t or (_settings(t[s]) != _settings(o[s]) and (not outs(o[s]) or outs(t[s]) != outs(o[s])))]


def ran_this(theirs: dict, ours: dict, stages: list[str], files: dict) -> tuple[list[str], list[str]]:
    """(the stages of `stages` that count, the defenders left out): a stage counts where it ran
    the code of `ours` (a dvc.lock) and rests on nothing run otherwise (ran_otherwise); a defender
    goes whole (`files`: measured(), stage -> (defender, file)), its evaluation and Table 5 cells
    being one, while the others keep theirs (an evaluation change leaves the ablations' cells)."""
    off = {files[s][0] for s in stages if code_md5(theirs, s) != code_md5(ours, s) or ran_otherwise(theirs, ours, s)}
    return [s for s in stages if files[s][0] not in off], sorted(off)


def baselines(source: str) -> list[str]:
    """The commits a seed's experiments ran from, read from its source in names.SEEDS: DVC names an
    experiment's ref after its baseline commit (refs/exps/<2 hex>/<38 hex>/<name>)."""
    return ["".join(m) for m in re.findall(r"refs/exps/(\w+)/(\w+)/", source)]


def code_md5(lock: dict, stage: str) -> dict[str, str]:
    """The code a stage ran: its code hash (pipeline.codehash), or each source file's md5 in a
    dvc.lock from before codehash.json."""
    entry = lock["stages"].get(stage, {})
    code = {f"{codehash.FILE}:{k}": v for k, v in entry.get("params", {}).get(codehash.FILE, {}).items()}
    return code | {d["path"]: d.get("md5") for d in entry.get("deps", []) if d["path"].startswith(("src/", "stages/"))}


def checked(rec: dict, ours: dict, show) -> dict:
    """A seed's record (seedstats.recorded) with each stage its experiments ran on other params or
    code upstream (ran_otherwise against the dvc.lock of each baseline commit its source names: an
    experiment is its baseline at another run.seed) marked as other code, so that seedstats.kept
    leaves it out; every stage where `show(rev, path)` (git) lacks a baseline's dvc.lock."""
    texts = [show(b, "dvc.lock") for b in baselines(rec["source"])]
    locks = [lock for t in texts if t and isinstance(lock := yaml.safe_load(t), dict) and "stages" in lock]
    off = {st for st in rec["code"] if not texts or len(locks) < len(texts)
           or any(ran_otherwise(lock, ours, st) for lock in locks)}
    return {**rec, "code": {st: {"ran otherwise upstream": True} if st in off else c for st, c in rec["code"].items()}}


def clear_queue(sh) -> None:
    """Before queueing: stale_tasks killed (they become Failed) and every finished task removed
    (not a queued one), so that `dvc queue status` lists only what runs. `sh`: seeds._sh."""
    for task in stale_tasks(sh("dvc", "queue", "status", ok=True).stdout):
        sh("dvc", "queue", "kill", task, ok=True)
    sh("dvc", "queue", "remove", "--success", "--failed", ok=True)


def stale_tasks(status: str) -> list[str]:
    """The tasks `dvc queue status` lists as Running while no worker is active: a worker killed with
    its session (a machine's session boundary kills processes, not the queue's record of them)
    leaves its task Running for good, and `run` would wait for it forever."""
    if not re.search(r"Worker status: 0 active", status):
        return []
    return [p[0] for p in (line.split() for line in status.splitlines()) if len(p) >= 3 and p[-1] == "Running"]


def workspace_cells(p: config.Params) -> dict:
    """defender -> attack -> eta -> error of the workspace's evaluations, Table 5 stages and ablations."""
    from advgame.pipeline.seedstats import read_cells
    from advgame.report.publish import INPUTS

    files = measured()
    at = lambda f: f if Path(f).exists() else f"{INPUTS}/{f}"  # noqa: E731  the publish stage's copy (no DVC cache)
    if missing := [f for _, f in files.values() if not Path(at(f)).exists()]:
        raise UserError(f"no main run here ({missing[0]}, ...: `dvc repro`); `advgame seeds bank` keeps seeds till then")
    return read_cells(files, list(files), config.eta_key(p.attack.eta), lambda f: json.loads(Path(at(f)).read_text()))
