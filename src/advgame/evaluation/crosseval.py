"""The cross-evaluation of one defender against every attack of the attack table at every eta
(the rows of reports/eval/<defender>.json, see docs/results.md).

The attacks run in the table's order (advgame.attack_table), each where its entry says: at
every eta of the sweep (FGSM-k, FGSM-curr, PGD-curr, AttNet-curr, and for a defender with a
detector the grey-box attacks and `pgd-adaptive`), at the strong etas (default: the main eta;
the strong set picked by name in eval.strong_attacks, AutoAttack's recipe: APGD-CE, APGD-DLR or
APGD-T, Square, and `pgd-transfer:baseline`), and ART's attacks (`art:<name>`), an optional
independent check on the first `art_n` images. `attacks_by_eta` in the output says which
attacks ran at which eta.

The etas run in increasing order and an iterative attack (the table's `carry`) at a larger eta
attacks only the images it has not fooled at a smaller one: the smaller eta's example lies
inside the larger ball, so it is kept and counted (per image the union: never weaker than a
fresh run). With a detector, an attack succeeds when the input is misclassified and not
rejected; `detector` in the output gives the clean rejection rate and, per attack, the detection
rate and both ways of counting. `per_image` holds each cell's mask at the main eta (seed 0),
packed (masks.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from advgame import attack_table
from advgame import masks as packing
from advgame.attacks.target import Call, Defender
from advgame.config import eta_key
from advgame.evaluation.sanity import sanity_checks
from advgame.evaluation.stats import cell


@dataclass
class Plan:
    """What to run against one defender (models are already on the evaluation device)."""

    etas: list[float]
    main_eta: float
    seeds: list[int] = field(default_factory=lambda: [0])
    pgd_steps: int = 40
    pgd_step_ratio: float = 2.5
    pgd_restarts: int = 1
    batch: int = 500
    fgsm_sources: dict[int, nn.Module] = field(default_factory=dict)      # k -> u_(k-1)
    own_attackers: dict[str, nn.Module] = field(default_factory=dict)     # arch -> h
    transfer_source: nn.Module | None = None   # the baseline: pgd-transfer:baseline's source
    strong_attacks: list[str] = field(default_factory=lambda: ["apgd-ce", "apgd-dlr", "square"])
    strong_etas: list[float] | None = None   # None = [main_eta]
    apgd_iters: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 3
    fab_iters: int = 100
    fab_targets: int = 9
    adaptive_starts: int = 8    # pgd-adaptive: guided starts per weight
    adaptive_guided_eta: float = 0.3  # pgd-adaptive: the guided starts run from this eta on
    adaptive_weights: list[float] = field(default_factory=lambda: [10.0, 3.0])  # pgd-adaptive's detector weights
    square_queries: int = 1000
    art_attacks: list[str] = field(default_factory=list)  # the independent check, as art:<name>
    art_etas: list[float] = field(default_factory=list)
    art_n: int = 0                                        # 0 = every image
    art_apgd_iters: int = 100
    art_square_queries: int = 1000
    classes: int = 10
    sanity_eta: float = 1.0
    is_baseline: bool = False   # the undefended model: learned attackers must beat its clean error
    carry: bool = True          # larger etas start from smaller etas' finds (False: bench only)

    @classmethod
    def from_params(cls, p, **models) -> "Plan":
        """The plan of the params' `eval`, `attack` and `art` sections; `models` are the
        fields that hold models or depend on the defender (fgsm_sources, own_attackers,
        transfer_source, classes, is_baseline)."""
        e, a = p.eval, p.art
        same = {f: getattr(e, f) for f in ("etas", "seeds", "pgd_steps", "pgd_step_ratio", "pgd_restarts",
                                           "batch", "strong_attacks", "apgd_iters", "apgd_restarts",
                                           "apgd_targets", "fab_iters", "fab_targets", "square_queries",
                                           "adaptive_starts", "adaptive_guided_eta", "adaptive_weights")}
        return cls(main_eta=p.attack.eta, strong_etas=e.strong_etas or [p.attack.eta], art_attacks=a.attacks,
                   art_etas=a.etas, art_n=a.n_test, art_apgd_iters=a.apgd_iters,
                   art_square_queries=a.square_queries, **same, **models)


def _members(a: attack_table.Attack, plan: Plan) -> list:
    return list(getattr(plan, a.members)) if a.family else [None]


def _applies(a: attack_table.Attack, defender: Defender, plan: Plan, eta: float) -> bool:
    """Whether the table's entry runs against this defender at this eta."""
    etas = {"sweep": None, "strong": plan.strong_etas if plan.strong_etas is not None else [plan.main_eta],
            "art": plan.art_etas}[a.etas]
    if a.run is None or (etas is not None and not any(math.isclose(eta, e) for e in etas)):
        return False
    return {"": True, "rejects": defender.reject is not None, "detector": defender.detect is not None,
            "transfer": plan.transfer_source is not None and not plan.is_baseline,
            "strong": a.name in plan.strong_attacks, "art": bool(plan.art_attacks)}[a.needs]


@dataclass
class _Runs:
    """The state of one defender's evaluation across etas: what each carrying attack found at
    the last eta it ran, times, which attacks ran where, and (with a detector) every outcome."""

    defender: Defender
    x: torch.Tensor
    y: torch.Tensor
    plan: Plan
    progress: object
    carried: dict = field(default_factory=dict)   # (attack, seed) -> (eta, x_adv, fooled)
    seconds: dict = field(default_factory=dict)
    by_eta: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)  # attack -> eta -> per seed (wrong, rejected)

    def outcome(self, xa):
        return self.defender.outcome(xa, self.y[: len(xa)], self.plan.batch)

    def attack(self, name: str, key: str, run, seeds: list[int], n: int, carry: bool) -> list[torch.Tensor]:
        """Run `run(idx, seed) -> x_adv of x[idx]` per seed; returns the error masks."""
        self.progress(f"eta {key}: {name}")
        t, S, eta = time.perf_counter(), self.plan.seeds, float(key)
        errs, outs = [], []
        for s in seeds:
            xa = self.x[:n].clone()
            prev = self.carried.get((name, s)) if carry and self.plan.carry else None
            if prev is not None and prev[0] > eta:  # a larger ball's example is no start
                prev = None
            todo = torch.arange(n, device=self.x.device) if prev is None else (~prev[2]).nonzero().flatten()
            if prev is not None:
                xa[prev[2]] = prev[1][prev[2]]
            if len(todo):
                xa[todo] = run(todo, s)
            wrong, rejected = self.outcome(xa)
            e = wrong if rejected is None else wrong & ~rejected
            if carry:
                self.carried[(name, s)] = (eta, xa, e)
            errs.append(e)
            outs.append((wrong, rejected))
        if len(seeds) < len(S):  # a deterministic attack: the same mask for every seed
            errs, outs = errs * len(S), outs * len(S)
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)
        self.by_eta.setdefault(key, []).append(name)
        self.outcomes.setdefault(name, {})[key] = outs
        return errs

    def table_attack(self, a: attack_table.Attack, eta: float, member=None) -> list[torch.Tensor]:
        """One entry of the attack table (one member of a family) at one eta."""
        fn, plan, x, y = a.runner(), self.plan, self.x, self.y
        n = min(plan.art_n or len(x), len(x)) if a.subset else len(x)
        name = a.name.format(member) if a.family else a.name
        return self.attack(name, eta_key(eta),
                           lambda i, s: fn(Call(self.defender, x[i], y[i], eta, plan, s, member, (x, y))),
                           plan.seeds if a.seeded else plan.seeds[:1], n, a.carry)


def _eta_masks(runs: _Runs, eta: float, clean_mask: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every applicable attack of the table at one eta, then the per-image union (worst-case)."""
    masks: dict[str, list[torch.Tensor]] = {}
    for a in attack_table.ATTACKS:
        if _applies(a, runs.defender, runs.plan, eta):
            for m in _members(a, runs.plan):
                masks[a.name.format(m) if a.family else a.name] = runs.table_attack(a, eta, m)
    worst = []
    for i in range(len(runs.plan.seeds)):
        w = clean_mask.clone()
        for ms in masks.values():
            w[: len(ms[i])] |= ms[i]
        worst.append(w)
    masks["worst-case"] = worst
    return masks


def _sanity_run(runs: _Runs, results: dict) -> tuple[str, dict]:
    """The defender's full white-box PGD (pgd-adaptive with a detector) at plan.sanity_eta, for
    `error_grows_to_one`; carried from the largest eta (an image fooled there is fooled in the
    eta-1 ball too)."""
    plan, defender = runs.plan, runs.defender
    name = "pgd-adaptive" if defender.detect is not None else "pgd-curr"
    if not plan.sanity_eta:
        return name, {}
    a = attack_table.get(name)
    fn = a.runner()
    key = eta_key(plan.sanity_eta)
    x, y = runs.x, runs.y
    masks = runs.attack(name, key, lambda i, s: fn(Call(defender, x[i], y[i], plan.sanity_eta, plan, s, pool=(x, y))),
                        plan.seeds[:1], len(x), a.carry)
    if key not in results.get(name, {}):  # only the sweep's etas
        runs.outcomes[name].pop(key)
    return name, cell(masks[:1])


def evaluate_defender(defender: Defender, x: torch.Tensor, y: torch.Tensor, plan: Plan,
                      progress=lambda msg: None) -> dict:
    """Every attack of the plan at every eta; returns {"results", "sanity", "sanity_detail",
    "sanity_attack", "sanity_pgd_large_eta", "attacks_by_eta", "seconds_by_attack",
    "per_image"} and, for a defender with a detector, "detector"."""
    strong = attack_table.names(needs="strong")
    unknown = [a for a in plan.strong_attacks if a not in strong]
    if unknown:
        raise ValueError(f"unknown strong attack {', '.join(unknown)}; allowed: {', '.join(strong)}")
    runs = _Runs(defender, x, y, plan, progress)
    wrong0, rej0 = runs.outcome(x)
    clean_mask = wrong0 if rej0 is None else wrong0 | rej0
    results: dict[str, dict[str, dict]] = {"clean": {"0": cell([clean_mask])}}
    per_image: dict[str, dict[str, str]] = {"clean": {"0": packing.pack(clean_mask.tolist())}}
    art_n = min(plan.art_n or len(x), len(x))
    main_key = eta_key(plan.main_eta)
    for eta in sorted(plan.etas):
        key = eta_key(eta)
        masks = _eta_masks(runs, eta, clean_mask)
        for name, ms in masks.items():
            results.setdefault(name, {})[key] = cell(ms)
            if key == main_key:
                per_image.setdefault(name, {})[key] = packing.pack(ms[0].tolist())
        if plan.art_attacks and any(f"art:{a}" in masks for a in plan.art_attacks) and art_n < len(x):
            results.setdefault("pgd-curr:art-subset", {})[key] = cell([m[:art_n] for m in masks["pgd-curr"]])
    progress("sanity")
    sanity_attack, sanity_pgd = _sanity_run(runs, results)
    sanity, detail = sanity_checks(results, plan, sanity_pgd, sanity_attack)
    out = {"results": results, "sanity": sanity, "sanity_detail": detail, "sanity_attack": sanity_attack,
           "sanity_pgd_large_eta": {eta_key(plan.sanity_eta): sanity_pgd} if sanity_pgd else {},
           "attacks_by_eta": runs.by_eta, "seconds_by_attack": runs.seconds, "per_image": per_image}
    if rej0 is not None:
        out["detector"] = detector_section(rej0, runs.outcomes)
    return out


def detector_section(clean_rejected: torch.Tensor, outcomes: dict) -> dict:
    """{"clean_rejection": cell, "by_attack": {attack: {eta: {"detected", "fooled_undetected",
    "rejected_or_wrong"}}}}: per attack the rate of rejected inputs, of inputs that fool the
    classifier unseen (the error when a rejection counts as defended) and of inputs rejected or
    misclassified (the error when a rejection counts as a failure)."""
    by_attack = {
        name: {key: {"detected": cell([r for _, r in outs]),
                     "fooled_undetected": cell([w & ~r for w, r in outs]),
                     "rejected_or_wrong": cell([w | r for w, r in outs])}
               for key, outs in by_key.items()}
        for name, by_key in outcomes.items()}
    return {"clean_rejection": cell([clean_rejected]), "by_attack": by_attack}
