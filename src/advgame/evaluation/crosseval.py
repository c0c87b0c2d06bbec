"""The cross-evaluation of one defender against every attack of the attack table at every eta
(the rows of reports/eval/<defender>.json, see docs/results.md).

The attacks run in the table's order (advgame.attack_table), each where its entry says: at
every eta of the sweep (FGSM-k, FGSM-curr, PGD-curr, AttNet-curr, and for a defender with a
detector the grey-box attacks and `pgd-adaptive`), at the strong etas (default: the main eta;
`pgd-transfer:baseline` and the cascade picked by name in eval.strong_attacks), and ART's
attacks (`art:<name>`), an optional independent check on the first `art_n` images.
`attacks_by_eta` in the output says which attacks ran at which eta. The main and strong etas
see every loaded image (eval.n_main); the sweep's other etas the first eval.n_test of them.

The cascade, as AutoAttack runs it (Croce & Hein 2020): after every other attack at an eta,
APGD-CE, APGD-T, FAB-T and Square (the table's `cascade` entries, in its order) each attack only
the images that nothing before it fooled (for a defender with a detector: misclassified and not
rejected), so no attack spends its budget on an image already lost. A cascade entry's cell is
the error after it (the union of everything before it and its own finds: AutoAttack's "robust
accuracy after each attack"); `cascade` in the output gives per eta the images each ran on and
the new images it fooled, `unique` per attack at the main eta the images only it fooled, and
the saturation check (`saturation`) reruns the cascade with twice the iterations and restarts on
the first eval.saturation_n images the cascade left unfooled.

The etas run in increasing order and an iterative attack (the table's `carry`) at a larger eta
attacks only the images it has not fooled at a smaller one: the smaller eta's example lies
inside the larger ball, so it is kept and counted (per image the union: never weaker than a
fresh run); for the same reason an image in a smaller eta's worst case is fooled at the larger
one, and the cascade starts without it. With a detector, an attack succeeds when the input is
misclassified and not rejected; `detector` in the output gives the clean rejection rate and, per
attack, the detection rate and both ways of counting (a cascade entry's over the images it ran
on). `per_image` holds each cell's mask at the main eta (seed 0), packed (masks.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

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
    strong_attacks: list[str] = field(default_factory=lambda: ["apgd-ce", "apgd-t", "fab-t", "square"])
    strong_etas: list[float] | None = None   # None = [main_eta]
    apgd_iters: int = 100
    apgd_restarts: int = 1
    apgd_targets: int = 3
    fab_iters: int = 100
    fab_targets: int = 9
    fab_restarts: int = 1
    adaptive_starts: int = 8    # pgd-adaptive: guided starts per weight
    adaptive_guided_eta: float = 0.3  # pgd-adaptive: the guided starts run from this eta on
    adaptive_weights: list[float] = field(default_factory=lambda: [10.0, 3.0])  # pgd-adaptive's detector weights
    square_queries: int = 1000
    square_restarts: int = 1
    art_attacks: list[str] = field(default_factory=list)  # the independent check, as art:<name>
    art_etas: list[float] = field(default_factory=list)
    art_n: int = 0                                        # 0 = every image
    art_apgd_iters: int = 100
    art_square_queries: int = 1000
    classes: int = 10
    sanity_eta: float = 1.0
    is_baseline: bool = False   # the undefended model: learned attackers must beat its clean error
    carry: bool = True          # larger etas start from smaller etas' finds (False: bench only)
    cascade: bool = True        # False: every cascade entry on every image (bench's flat evaluation)
    n_sweep: int = 0            # images at the sweep's etas other than the main and strong ones; 0 = all
    saturation_n: int = 0       # the saturation check's images (the first n); 0 = no check

    @classmethod
    def from_params(cls, p, **models) -> "Plan":
        """The plan of the params' `eval`, `attack` and `art` sections; `models` are the
        fields that hold models or depend on the defender (fgsm_sources, own_attackers,
        transfer_source, classes, is_baseline)."""
        e, a = p.eval, p.art
        same = {f: getattr(e, f) for f in ("etas", "seeds", "pgd_steps", "pgd_step_ratio", "pgd_restarts",
                                           "batch", "strong_attacks", "apgd_iters", "apgd_restarts",
                                           "apgd_targets", "fab_iters", "fab_targets", "square_queries",
                                           "adaptive_starts", "adaptive_guided_eta", "adaptive_weights",
                                           "saturation_n")}
        return cls(main_eta=p.attack.eta, n_sweep=e.n_test, strong_etas=e.strong_etas or [p.attack.eta], art_attacks=a.attacks,
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
class ImageCall(Call):
    """A Call that knows its images' rows in the evaluated set (`pool`): the random draws of
    APGD, FAB and Square are keyed by them (attacks/keyed.py), so an image meets the same starts
    and squares in the cascade, on what the attacks before left, as in a flat run on every image."""
    index: torch.Tensor | None = None


@dataclass
class _Runs:
    """The state of one defender's evaluation across etas: what each carrying attack found at
    the last eta it ran, the last eta's worst case, times, which attacks ran where, the cascade's
    counts and (with a detector) every outcome."""

    defender: Defender
    x: torch.Tensor
    y: torch.Tensor
    plan: Plan
    progress: object
    carried: dict = field(default_factory=dict)   # (attack, seed) -> (eta, x_adv, fooled)
    worst: tuple | None = None                    # (eta, per-seed worst-case masks) of the last eta
    seconds: dict = field(default_factory=dict)
    by_eta: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)  # attack -> eta -> per seed (wrong, rejected)
    cascade: dict = field(default_factory=dict)   # eta -> attack -> {"ran_on", "new"} (seed 0)
    found: dict = field(default_factory=dict)     # eta -> attack -> its new finds (seed 0)

    def n_at(self, eta: float) -> int:
        """Images at this eta: all at the main and strong etas, the sweep's first n_sweep elsewhere."""
        full = [self.plan.main_eta, *(self.plan.strong_etas or [])]
        if any(math.isclose(eta, e) for e in full) or not self.plan.n_sweep:
            return len(self.x)
        return min(self.plan.n_sweep, len(self.x))

    def outcome(self, xa, y=None):
        return self.defender.outcome(xa, self.y[: len(xa)] if y is None else y, self.plan.batch)

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
            kept = torch.zeros(n, dtype=torch.bool, device=self.x.device)
            if prev is not None:  # the smaller eta may have seen fewer images (the sweep's subset)
                m = min(n, len(prev[2]))
                kept[:m] = prev[2][:m]
                xa[kept] = prev[1][:m][kept[:m]]
            todo = (~kept).nonzero().flatten()
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
        self._done(name, key, t, outs)
        return errs

    def _done(self, name: str, key: str, t: float, outs: list) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)
        self.by_eta.setdefault(key, []).append(name)
        if outs:
            self.outcomes.setdefault(name, {})[key] = outs

    def call(self, a: attack_table.Attack, idx, eta: float, seed: int, member=None, plan: Plan | None = None):
        """x_adv of x[idx] by the table's entry `a` (one member of a family)."""
        return a.runner()(ImageCall(self.defender, self.x[idx], self.y[idx], eta, plan or self.plan, seed, member,
                                    (self.x, self.y), index=idx))

    def table_attack(self, a: attack_table.Attack, eta: float, member=None) -> list[torch.Tensor]:
        """One entry of the attack table (one member of a family) at one eta, on every image."""
        n = min(self.plan.art_n or len(self.x), self.n_at(eta)) if a.subset else self.n_at(eta)
        return self.attack(attack_table.result_name(a, member), eta_key(eta),
                           lambda i, s: self.call(a, i, eta, s, member),
                           self.plan.seeds if a.seeded else self.plan.seeds[:1], n, a.carry)

    def cascade_attack(self, a: attack_table.Attack, eta: float, member, before: list[torch.Tensor]):
        """One cascade entry at one eta: per seed it attacks the images `before` has not fooled
        (every image with plan.cascade False) and returns the masks after it (before | its finds)."""
        name, key = attack_table.result_name(a, member), eta_key(eta)
        self.progress(f"eta {key}: {name}")
        t, after, outs = time.perf_counter(), [], []
        for i, s in enumerate(self.plan.seeds):
            n = len(before[i])
            todo = (~before[i]).nonzero().flatten() if self.plan.cascade else torch.arange(n, device=self.x.device)
            found = torch.zeros(n, dtype=torch.bool, device=self.x.device)
            if len(todo):
                wrong, rejected = self.outcome(self.call(a, todo, eta, s, member), self.y[todo])
                found[todo] = wrong if rejected is None else wrong & ~rejected
                outs.append((wrong, rejected))
            after.append(before[i] | found)
            if i == 0:
                new = found & ~before[i]
                self.cascade.setdefault(key, {})[name] = {"ran_on": len(todo), "new": int(new.sum())}
                self.found.setdefault(key, {})[name] = new
        self._done(name, key, t, outs if len(outs) == len(self.plan.seeds) else [])
        return after


def _union(masks, n: int, base: torch.Tensor) -> torch.Tensor:
    w = base[:n].clone()
    for m in masks:
        k = min(n, len(m))
        w[:k] |= m[:k]
    return w


def _eta_masks(runs: _Runs, eta: float, clean_mask: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every applicable attack of the table at one eta (the cascade last, each of its entries on
    what the others left), then the per-image union (worst-case)."""
    plan, n = runs.plan, runs.n_at(eta)
    masks: dict[str, list[torch.Tensor]] = {}
    applies = [a for a in attack_table.ATTACKS if _applies(a, runs.defender, plan, eta)]
    for a in (a for a in applies if not a.cascade):
        for m in _members(a, plan):
            masks[attack_table.result_name(a, m)] = runs.table_attack(a, eta, m)
    prev = runs.worst[1] if runs.worst is not None else [clean_mask] * len(plan.seeds)
    ours = [ms for name, ms in masks.items() if not attack_table.matches(name, needs="art")]  # ART: a check, no head start
    before = [_union([*(ms[i] for ms in ours), prev[i]], n, clean_mask) for i in range(len(plan.seeds))]
    for a in (a for a in applies if a.cascade):
        for m in _members(a, plan):
            before = masks[attack_table.result_name(a, m)] = runs.cascade_attack(a, eta, m, before)
    worst = [_union([*(ms[i] for ms in masks.values()), prev[i]], n, clean_mask) for i in range(len(plan.seeds))]
    masks["worst-case"] = worst
    runs.worst = (eta, worst)
    return masks


def unique_finds(masks: dict[str, list[torch.Tensor]], found: dict[str, torch.Tensor],
                 clean_mask: torch.Tensor) -> dict[str, int]:
    """Per attack at one eta (seed 0): the images it fooled and no other attack did. An attack
    outside the cascade: its mask minus every other attack's finds; a cascade entry: its new
    finds minus the outside attacks' (the cascade's later entries never saw them)."""
    own = {a: ms[0] & ~clean_mask[: len(ms[0])] for a, ms in masks.items()
           if a != "worst-case" and a not in found}
    own.update(found)
    out = {}
    for a, m in own.items():
        others = _union([o for b, o in own.items() if b != a], len(m), torch.zeros_like(m))
        out[a] = int((m & ~others).sum())
    return out


def _saturation(runs: _Runs, eta: float, worst: torch.Tensor) -> dict:
    """The cascade again with twice the iterations and restarts (other random starts), on the
    first plan.saturation_n images the evaluation left unfooled at this eta: how many more fall,
    and the change of worst-case it makes. What it fools joins `worst` (in place): a robust image
    is one no attack run here fooled."""
    plan, n = runs.plan, min(runs.plan.saturation_n, len(worst))
    cascade = [a for a in attack_table.ATTACKS if a.cascade and _applies(a, runs.defender, plan, eta)]
    if not (n and cascade):
        return {}
    runs.progress(f"eta {eta_key(eta)}: saturation")
    t = time.perf_counter()
    double = replace(plan, apgd_iters=2 * plan.apgd_iters, apgd_restarts=2 * plan.apgd_restarts,
                     fab_iters=2 * plan.fab_iters, fab_restarts=2 * plan.fab_restarts,
                     square_queries=2 * plan.square_queries, square_restarts=2 * plan.square_restarts)
    fooled = worst[:n].clone()
    start = int((~fooled).sum())
    for a in cascade:
        for m in _members(a, plan):
            todo = (~fooled).nonzero().flatten()
            if len(todo):
                wrong, rejected = runs.outcome(runs.call(a, todo, eta, plan.seeds[0] + 1, m, double), runs.y[todo])
                fooled[todo] |= wrong if rejected is None else wrong & ~rejected
    more = int(fooled.sum() - worst[:n].sum())
    worst[:n] |= fooled
    runs.seconds["saturation"] = round(time.perf_counter() - t, 3)
    return {"eta": eta_key(eta), "n": n, "attacked": start, "more": more, "change": round(more / n, 6),
            "settings": {"apgd_iters": double.apgd_iters, "apgd_restarts": double.apgd_restarts,
                         "fab_iters": double.fab_iters, "fab_restarts": double.fab_restarts,
                         "square_queries": double.square_queries, "square_restarts": double.square_restarts,
                         "seed": plan.seeds[0] + 1}}


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
    "per_image", "cascade", "unique", "saturation", "n_by_eta"} and, for a defender with a detector,
    "detector"."""
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
    unique, saturation = {}, {}
    for eta in sorted(plan.etas):
        key = eta_key(eta)
        masks = _eta_masks(runs, eta, clean_mask)
        if key == main_key:  # the saturation rerun's finds join worst-case (and the larger etas' start)
            unique = unique_finds(masks, runs.found.get(key, {}), clean_mask)
            saturation = _saturation(runs, eta, masks["worst-case"][0])
        for name, ms in masks.items():
            results.setdefault(name, {})[key] = cell(ms)
            if key == main_key:
                per_image.setdefault(name, {})[key] = packing.pack(ms[0].tolist())
        if plan.art_attacks and any(f"art:{a}" in masks for a in plan.art_attacks) and art_n < len(x):
            results.setdefault("pgd-curr:art-subset", {})[key] = cell([m[:art_n] for m in masks["pgd-curr"]])
    progress("sanity")
    sanity_attack, sanity_pgd = _sanity_run(runs, results)
    sanity, detail = sanity_checks(results, plan, sanity_pgd, sanity_attack, runs.cascade.get(main_key, {}),
                                   saturation)
    out = {"results": results, "sanity": sanity, "sanity_detail": detail, "sanity_attack": sanity_attack,
           "sanity_pgd_large_eta": {eta_key(plan.sanity_eta): sanity_pgd} if sanity_pgd else {},
           "attacks_by_eta": runs.by_eta, "seconds_by_attack": runs.seconds, "per_image": per_image,
           "cascade": runs.cascade, "unique": {main_key: unique} if unique else {}, "saturation": saturation,
           "n_by_eta": {eta_key(e): runs.n_at(e) for e in sorted(plan.etas)}}
    if rej0 is not None:
        out["detector"] = detector_section(rej0, runs.outcomes)
    return out


def row_json(name: str, out: dict, p, n: int) -> dict:
    """reports/eval/<defender>.json of evaluate_defender's `out` on n images under params `p`
    (docs/results.md); timings stay out of it (its bytes must not change when the same commit is
    rerun)."""
    e = p.eval
    return {"defender": name, "results": out["results"], "sanity": out["sanity"],
            "sanity_detail": out["sanity_detail"], "sanity_attack": out["sanity_attack"],
            "sanity_pgd_large_eta": out["sanity_pgd_large_eta"],
            **({"detector": out["detector"]} if "detector" in out else {}),
            "per_image": out["per_image"], "cascade": out["cascade"], "unique": out["unique"],
            "saturation": out["saturation"],
            "settings": {"n_test": n, "n_by_eta": out["n_by_eta"], "pgd_steps": e.pgd_steps,
                         "pgd_restarts": e.pgd_restarts, "seeds": e.seeds, "attacker_eta": p.attack.eta,
                         "strong_attacks": e.strong_attacks, "apgd_iters": e.apgd_iters,
                         "apgd_restarts": e.apgd_restarts, "apgd_targets": e.apgd_targets,
                         "fab_iters": e.fab_iters, "fab_targets": e.fab_targets,
                         "square_queries": e.square_queries, "saturation_n": e.saturation_n,
                         "art_attacks": p.art.attacks, "art_n": min(p.art.n_test or n, n),
                         "attacks_by_eta": out["attacks_by_eta"]}}


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
