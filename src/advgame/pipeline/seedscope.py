"""What a seed experiment (advgame.pipeline.seeds) targets, read from dvc.yaml, and which stages
of an experiment's dvc.lock ran at its seed."""
from __future__ import annotations

from pathlib import Path

import yaml

from advgame import config
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
