"""Error rates with Wilson intervals, and the cross-evaluation of one defender against every
attack at every eta (the rows of reports/eval/<defender>.json, see STUDY.md's results contract).

At every eta of the sweep: FGSM-k, FGSM-curr, PGD-curr and AttNet-curr (and, for a defender with
a detector, the grey-box attacks and `pgd-adaptive`, adaptive.py). At the strong etas (default:
the main eta) also the strong set, picked by name from STRONG (AutoAttack's recipe: APGD-CE,
APGD-DLR or APGD-T, Square), on every evaluated image, and `pgd-transfer:baseline` (PGD crafted
on the undefended baseline); ART's attacks (`art:<name>`) are an optional independent check on
the first `art_n` images. `attacks_by_eta` in the output says which attacks ran at which eta.

The etas run in increasing order and an iterative attack (CARRY) at a larger eta attacks only
the images it has not fooled at a smaller one: the smaller eta's example lies inside the larger
ball, so it is kept and counted (per image the union: never weaker than a fresh run). With a
detector, an attack succeeds when the input is misclassified and not rejected; `detector` in the
output gives the clean rejection rate and, per attack, the detection rate and both ways of
counting. `per_image` holds each cell's mask at the main eta (seed 0), packed (masks.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import masks as packing
from .adaptive import adaptive_pgd, joint_loss, joint_margin
from .apgd import apgd, apgd_t
from .art_attacks import art_attack
from .attacks import attnet, ce_loss, fgsm, pgd, square
from .config import eta_key
from .defenders import Defender
from .sanity import WHITE_BOX, sanity_checks, transfer_check  # noqa: F401  (report.py reads these here)

Z95 = 1.959963984540054
# iterative attacks whose larger-eta run starts from what a smaller eta left unfooled
CARRY = ("pgd-curr", "pgd-curr:grey-box", "pgd-adaptive", "apgd-ce", "apgd-dlr", "apgd-t", "square")


def wilson(k: float, n: int, z: float = Z95) -> list[float]:
    """95% Wilson score interval for k errors out of n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


def cell(masks: list[torch.Tensor]) -> dict:
    """One result cell from per-seed boolean error masks: error (mean over seeds), its Wilson
    interval (on the mean count), n, and sd over seeds when there are several."""
    n = int(masks[0].numel())
    errs = [float(m.float().mean()) for m in masks]
    mean = sum(errs) / len(errs)
    out = {"error": round(mean, 6), "ci95": wilson(mean * n, n), "n": n}
    if len(errs) > 1:
        out["sd"] = round(float(torch.tensor(errs).std(unbiased=True)), 6)
        out["seeds"] = len(errs)
    return out


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
                                           "apgd_targets", "square_queries")}
        return cls(main_eta=p.attack.eta, strong_etas=e.strong_etas or [p.attack.eta], art_attacks=a.attacks,
                   art_etas=a.etas, art_n=a.n_test, art_apgd_iters=a.apgd_iters,
                   art_square_queries=a.square_queries, **same, **models)


def _success(defender: Defender):
    """With a detector, an attack succeeds when the input is misclassified and not rejected."""
    return None if defender.reject is None else (
        lambda xa, ya: defender.errors(xa, ya, clean=False, batch=len(xa)))


def _loss(defender: Defender, kind: str):
    """APGD's loss: the plain one, or with a detector the detector-aware one (adaptive.py)."""
    if defender.detect is not None:
        return joint_loss(defender, kind)
    if kind == "ce" and defender.attack_loss is not ce_loss:
        return defender.attack_loss
    return kind


StrongAttack = Callable[[Defender, torch.Tensor, torch.Tensor, float, Plan, int], torch.Tensor]
STRONG: dict[str, StrongAttack] = {
    "apgd-ce": lambda d, x, y, eta, p, s: apgd(d.model, x, y, eta, p.apgd_iters, _loss(d, "ce"),
                                               p.apgd_restarts, s, p.batch, _success(d)),
    "apgd-dlr": lambda d, x, y, eta, p, s: apgd(d.model, x, y, eta, p.apgd_iters, _loss(d, "dlr"),
                                                p.apgd_restarts, s, p.batch, _success(d)),
    "apgd-t": lambda d, x, y, eta, p, s: apgd_t(d.model, x, y, eta, p.apgd_iters, p.apgd_targets, s,
                                                p.batch, _success(d), loss=_loss(d, "dlr-t")),
    "square": lambda d, x, y, eta, p, s: square(d.model, x, y, eta, p.square_queries, seed=s,
                                                batch=p.batch, success=_success(d),
                                                objective=joint_margin(d) if d.detect else None),
}


def _pgd(defender: Defender, x, y, eta, plan: Plan, seed: int, target: nn.Module | None = None,
         loss=None):
    success = _success(defender)
    loss = loss or defender.attack_loss
    # a detector-aware loss may come with a form that gives loss and success from one pass
    loss = getattr(loss, "joint_version", loss) if target is None else loss
    return pgd(target or defender.model, x, y, eta, steps=plan.pgd_steps,
               step_size=plan.pgd_step_ratio * eta / plan.pgd_steps, restarts=plan.pgd_restarts,
               seed=seed, batch=plan.batch, loss=loss, success=success)


def _adaptive(defender: Defender, x, y, eta, plan: Plan, seed: int):
    return adaptive_pgd(defender, x, y, eta, steps=plan.pgd_steps,
                        step_size=plan.pgd_step_ratio * eta / plan.pgd_steps, seed=seed, batch=plan.batch)


def _transfer(plan: Plan, x, y, eta, seed):
    """PGD on the baseline, all steps (no early stop: a confident example transfers better)."""
    return pgd(plan.transfer_source, x, y, eta, steps=plan.pgd_steps,
               step_size=plan.pgd_step_ratio * eta / plan.pgd_steps, restarts=plan.pgd_restarts,
               seed=seed, batch=plan.batch, early_stop=False)


def evaluate_defender(defender: Defender, x: torch.Tensor, y: torch.Tensor, plan: Plan,
                      progress=lambda msg: None) -> dict:
    """Every attack of the plan at every eta; returns {"results", "sanity", "sanity_detail",
    "sanity_attack", "sanity_pgd_large_eta", "attacks_by_eta", "seconds_by_attack",
    "per_image"} and, for a defender with a detector, "detector"."""
    unknown = [a for a in plan.strong_attacks if a not in STRONG]
    if unknown:
        raise ValueError(f"unknown strong attack {', '.join(unknown)}; allowed: {', '.join(STRONG)}")
    S = plan.seeds
    detector = defender.reject is not None
    results: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float] = {}
    by_eta: dict[str, list[str]] = {}
    # (attack, seed) -> (eta, x_adv, fooled) at the last eta it ran: the start of a larger eta
    carried: dict[tuple[str, int], tuple[float, torch.Tensor, torch.Tensor]] = {}
    outcomes: dict[str, dict[str, list]] = {}   # attack -> eta -> per seed (wrong, rejected)
    per_image: dict[str, dict[str, str]] = {}

    def outcome(xa):
        wrong, rejected = defender.outcome(xa, y[: len(xa)], plan.batch)
        return wrong, rejected

    def attack(name, key, run, seeds=S, n=len(x)):
        """Run `run(idx, seed) -> x_adv of x[idx]` per seed; returns the error masks."""
        progress(f"eta {key}: {name}")
        t = time.perf_counter()
        errs, outs = [], []
        eta = float(key)
        for s in seeds:
            xa = x[:n].clone()
            prev = carried.get((name, s)) if name in CARRY and plan.carry else None
            if prev is not None and prev[0] > eta:  # a larger ball's example is no start
                prev = None
            todo = torch.arange(n, device=x.device) if prev is None else (~prev[2]).nonzero().flatten()
            if prev is not None:
                xa[prev[2]] = prev[1][prev[2]]
            if len(todo):
                xa[todo] = run(todo, s)
            wrong, rejected = outcome(xa)
            e = wrong if rejected is None else wrong & ~rejected
            if name in CARRY:
                carried[(name, s)] = (eta, xa, e)
            errs.append(e)
            outs.append((wrong, rejected))
        if len(seeds) < len(S):  # a deterministic attack: the same mask for every seed
            errs, outs = errs * len(S), outs * len(S)
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t, 3)
        by_eta.setdefault(key, []).append(name)
        outcomes.setdefault(name, {})[key] = outs
        return errs

    one = S[:1]
    wrong0, rej0 = outcome(x)
    clean_mask = wrong0 if rej0 is None else wrong0 | rej0
    results["clean"] = {"0": cell([clean_mask])}
    per_image["clean"] = {"0": packing.pack(clean_mask.tolist())}
    art_n = min(plan.art_n or len(x), len(x))
    strong_etas = plan.strong_etas if plan.strong_etas is not None else [plan.main_eta]
    main_key = eta_key(plan.main_eta)
    for eta in sorted(plan.etas):
        key = eta_key(eta)
        masks: dict[str, list[torch.Tensor]] = {}
        for k, src in plan.fgsm_sources.items():
            masks[f"fgsm-{k}"] = attack(f"fgsm-{k}", key, lambda i, s: fgsm(src, x[i], y[i], eta, plan.batch), one)
        masks["fgsm-curr"] = attack("fgsm-curr", key, lambda i, s: fgsm(
            defender.model, x[i], y[i], eta, plan.batch, defender.attack_loss), one)
        masks["pgd-curr"] = attack("pgd-curr", key, lambda i, s: _pgd(defender, x[i], y[i], eta, plan, s))
        if detector:  # grey-box: the attacker sees the bare classifier only
            masks["fgsm-curr:grey-box"] = attack("fgsm-curr:grey-box", key, lambda i, s: fgsm(
                defender.classifier, x[i], y[i], eta, plan.batch), one)
            masks["pgd-curr:grey-box"] = attack("pgd-curr:grey-box", key, lambda i, s: _pgd(
                defender, x[i], y[i], eta, plan, s, defender.classifier, ce_loss))
        if defender.detect is not None:  # white-box on the whole defense (adaptive.py)
            masks["pgd-adaptive"] = attack("pgd-adaptive", key, lambda i, s: _adaptive(
                defender, x[i], y[i], eta, plan, s))
        for arch, h in plan.own_attackers.items():
            masks[f"attnet-curr:{arch}"] = attack(f"attnet-curr:{arch}", key,
                                                  lambda i, s: attnet(h, x[i], eta, plan.batch), one)
        if any(math.isclose(eta, e) for e in strong_etas):
            for name in plan.strong_attacks:
                masks[name] = attack(name, key, lambda i, s: STRONG[name](defender, x[i], y[i], eta, plan, s))
            if plan.transfer_source is not None and not plan.is_baseline:
                masks["pgd-transfer:baseline"] = attack("pgd-transfer:baseline", key,
                                                        lambda i, s: _transfer(plan, x[i], y[i], eta, s))
        if any(math.isclose(eta, e) for e in plan.art_etas):
            for name in plan.art_attacks:
                masks[f"art:{name}"] = attack(f"art:{name}", key, lambda i, s: art_attack(
                    name, defender.model, x[i], y[i], eta, plan.classes, plan.art_apgd_iters,
                    plan.art_square_queries, seed=s, batch=plan.batch), n=art_n)
        worst = []
        for i in range(len(S)):
            w = clean_mask.clone()
            for m in masks.values():
                w[: len(m[i])] |= m[i]
            worst.append(w)
        masks["worst-case"] = worst
        for name, ms in masks.items():
            results.setdefault(name, {})[key] = cell(ms)
            if key == main_key:
                per_image.setdefault(name, {})[key] = packing.pack(ms[0].tolist())
        if plan.art_attacks and any(f"art:{a}" in masks for a in plan.art_attacks) and art_n < len(x):
            results.setdefault("pgd-curr:art-subset", {})[key] = cell([m[:art_n] for m in masks["pgd-curr"]])
    progress("sanity")
    sanity_attack = "pgd-adaptive" if defender.detect is not None else "pgd-curr"
    sanity_pgd = {}
    if plan.sanity_eta:
        run = _adaptive if defender.detect is not None else _pgd
        # carried from the largest eta: an image fooled there is fooled in the eta-1 ball too
        sanity_pgd = cell(attack(sanity_attack, eta_key(plan.sanity_eta),
                                 lambda i, s: run(defender, x[i], y[i], plan.sanity_eta, plan, s), one)[:1])
        if eta_key(plan.sanity_eta) not in results.get(sanity_attack, {}):  # only the sweep's etas
            outcomes[sanity_attack].pop(eta_key(plan.sanity_eta))
    sanity, detail = sanity_checks(results, plan, sanity_pgd, sanity_attack)
    out = {"results": results, "sanity": sanity, "sanity_detail": detail, "sanity_attack": sanity_attack,
           "sanity_pgd_large_eta": {eta_key(plan.sanity_eta): sanity_pgd} if sanity_pgd else {},
           "attacks_by_eta": by_eta, "seconds_by_attack": seconds, "per_image": per_image}
    if detector:
        out["detector"] = detector_section(rej0, outcomes)
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
