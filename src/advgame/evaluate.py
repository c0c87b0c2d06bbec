"""Error rates with Wilson intervals, and the cross-evaluation of one defender against every
attack at every eta (the rows of reports/eval/<defender>.json, see STUDY.md's results contract).

At every eta of the sweep: FGSM-k, FGSM-curr, PGD-curr and AttNet-curr. At the strong etas
(default: the main eta) also the strong set, picked by name from STRONG (AutoAttack's recipe:
APGD-CE, APGD-DLR or APGD-T, Square), on every evaluated image; ART's attacks (`art:<name>`)
are an optional independent check on the first `art_n` images. `attacks_by_eta` in the output
says which attacks ran at which eta.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .apgd import apgd, apgd_t
from .art_attacks import art_attack
from .attacks import attnet, ce_loss, fgsm, pgd, square
from .config import eta_key
from .defenders import Defender

Z95 = 1.959963984540054
# white-box attacks on the defender itself (the bar a transfer attack must not beat)
WHITE_BOX = ("fgsm-curr", "pgd-curr", "apgd-ce", "apgd-dlr", "apgd-t")


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


def _success(defender: Defender):
    """With a detector, an attack succeeds when the input is misclassified and not rejected."""
    return None if defender.reject is None else (
        lambda xa, ya: defender.errors(xa, ya, clean=False, batch=len(xa)))


def _ce(defender: Defender):
    return "ce" if defender.attack_loss is ce_loss else defender.attack_loss


StrongAttack = Callable[[Defender, torch.Tensor, torch.Tensor, float, Plan, int], torch.Tensor]
STRONG: dict[str, StrongAttack] = {
    "apgd-ce": lambda d, x, y, eta, p, s: apgd(d.model, x, y, eta, p.apgd_iters, _ce(d), p.apgd_restarts,
                                               s, p.batch, _success(d)),
    "apgd-dlr": lambda d, x, y, eta, p, s: apgd(d.model, x, y, eta, p.apgd_iters, "dlr", p.apgd_restarts,
                                                s, p.batch, _success(d)),
    "apgd-t": lambda d, x, y, eta, p, s: apgd_t(d.model, x, y, eta, p.apgd_iters, p.apgd_targets, s,
                                                p.batch, _success(d)),
    "square": lambda d, x, y, eta, p, s: square(d.model, x, y, eta, p.square_queries, seed=s,
                                                batch=p.batch, success=_success(d)),
}


def _pgd(defender: Defender, x, y, eta, plan: Plan, seed: int, target: nn.Module | None = None,
         loss=None):
    success = _success(defender)
    return pgd(target or defender.model, x, y, eta, steps=plan.pgd_steps,
               step_size=plan.pgd_step_ratio * eta / plan.pgd_steps, restarts=plan.pgd_restarts,
               seed=seed, batch=plan.batch, loss=loss or defender.attack_loss, success=success)


def evaluate_defender(defender: Defender, x: torch.Tensor, y: torch.Tensor, plan: Plan,
                      progress=lambda msg: None) -> dict:
    """Every attack of the plan at every eta; returns {"results", "sanity", "sanity_detail",
    "sanity_pgd_large_eta", "attacks_by_eta", "seconds_by_attack"}."""
    unknown = [a for a in plan.strong_attacks if a not in STRONG]
    if unknown:
        raise ValueError(f"unknown strong attack {', '.join(unknown)}; allowed: {', '.join(STRONG)}")
    S = plan.seeds
    err = lambda xa, clean=False: defender.errors(xa, y[: len(xa)], clean, plan.batch)  # noqa: E731
    results: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float] = {}
    by_eta: dict[str, list[str]] = {}

    def timed(name: str, key: str, run):
        progress(f"eta {key}: {name}")
        t = time.perf_counter()
        out = run()
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t, 3)
        by_eta.setdefault(key, []).append(name)
        return out

    clean_mask = err(x, clean=True)
    results["clean"] = {"0": cell([clean_mask])}
    art_n = min(plan.art_n or len(x), len(x))
    strong_etas = plan.strong_etas if plan.strong_etas is not None else [plan.main_eta]
    for eta in plan.etas:
        key = eta_key(eta)
        masks: dict[str, list[torch.Tensor]] = {}
        for k, src in plan.fgsm_sources.items():
            masks[f"fgsm-{k}"] = timed(f"fgsm-{k}", key, lambda: [err(fgsm(src, x, y, eta, plan.batch))] * len(S))
        masks["fgsm-curr"] = timed("fgsm-curr", key, lambda: [
            err(fgsm(defender.model, x, y, eta, plan.batch, defender.attack_loss))] * len(S))
        masks["pgd-curr"] = timed("pgd-curr", key, lambda: [err(_pgd(defender, x, y, eta, plan, s)) for s in S])
        if defender.reject is not None:  # grey-box: the attacker sees the bare classifier only
            masks["fgsm-curr:grey-box"] = timed("fgsm-curr:grey-box", key, lambda: [
                err(fgsm(defender.classifier, x, y, eta, plan.batch))] * len(S))
            masks["pgd-curr:grey-box"] = timed("pgd-curr:grey-box", key, lambda: [
                err(_pgd(defender, x, y, eta, plan, s, defender.classifier, ce_loss)) for s in S])
        for arch, h in plan.own_attackers.items():
            masks[f"attnet-curr:{arch}"] = timed(f"attnet-curr:{arch}", key,
                                                 lambda: [err(attnet(h, x, eta, plan.batch))] * len(S))
        if any(math.isclose(eta, e) for e in strong_etas):
            for name in plan.strong_attacks:
                masks[name] = timed(name, key, lambda: [
                    err(STRONG[name](defender, x, y, eta, plan, s)) for s in S])
        if any(math.isclose(eta, e) for e in plan.art_etas):
            for name in plan.art_attacks:
                masks[f"art:{name}"] = timed(f"art:{name}", key, lambda: [err(art_attack(
                    name, defender.model, x[:art_n], y[:art_n], eta, plan.classes, plan.art_apgd_iters,
                    plan.art_square_queries, seed=s, batch=plan.batch)) for s in S])
        worst = []
        for i in range(len(S)):
            w = clean_mask.clone()
            for m in masks.values():
                w[: len(m[i])] |= m[i]
            worst.append(w)
        masks["worst-case"] = worst
        for name, ms in masks.items():
            results.setdefault(name, {})[key] = cell(ms)
        if plan.art_attacks and any(f"art:{a}" in masks for a in plan.art_attacks) and art_n < len(x):
            results.setdefault("pgd-curr:art-subset", {})[key] = cell([m[:art_n] for m in masks["pgd-curr"]])
    progress("sanity")
    sanity_pgd = {}
    if plan.sanity_eta:
        sanity_pgd = timed("pgd-curr", eta_key(plan.sanity_eta),
                           lambda: cell([err(_pgd(defender, x, y, plan.sanity_eta, plan, S[0]))]))
    sanity, detail = sanity_checks(results, plan, sanity_pgd)
    return {"results": results, "sanity": sanity, "sanity_detail": detail,
            "sanity_pgd_large_eta": {eta_key(plan.sanity_eta): sanity_pgd} if sanity_pgd else {},
            "attacks_by_eta": by_eta, "seconds_by_attack": seconds}


def _overlap_ge(a: dict, b: dict) -> bool:
    """a is not clearly below b: a's interval reaches b's error or b's reaches a's. (One-sided,
    a Wilson upper bound is below 1 whenever one image is missed: 0.998 vs 1.000 is no failure.)"""
    return a["ci95"][1] >= b["error"] or b["ci95"][0] <= a["error"]


def sanity_checks(results: dict, plan: Plan, large_eta_pgd: dict) -> tuple[dict, dict]:
    """Gradient-masking flags (STUDY.md): True = pass, False = fail, None = not computable."""
    sanity: dict[str, bool | None] = {}
    detail: dict[str, str] = {}
    pg, fg = results.get("pgd-curr", {}), results.get("fgsm-curr", {})
    bad = [k for k in pg if k in fg and not _overlap_ge(pg[k], fg[k])]
    sanity["pgd_ge_fgsm"] = not bad
    detail["pgd_ge_fgsm"] = (f"PGD below FGSM at eta {', '.join(bad)}" if bad
                             else "PGD-curr error >= FGSM-curr error at every eta (within CI)")
    etas = sorted(pg, key=float)
    mono = all(pg[b]["ci95"][1] >= pg[a]["error"] for a, b in zip(etas, etas[1:]))
    top = large_eta_pgd.get("error") if large_eta_pgd else None
    sanity["error_grows_to_one"] = bool(mono and (top is None or top >= 0.95))
    detail["error_grows_to_one"] = (
        "PGD-curr error by eta: " + ", ".join(f"{e}: {pg[e]['error']:.3f}" for e in etas)
        + (f"; at eta {plan.sanity_eta}: {top:.3f} (must be >= 0.95)" if top is not None else ""))
    sq = results.get("square", {})
    wb = [results.get(a, {}) for a in ("pgd-curr", "apgd-ce", "apgd-dlr", "apgd-t")]
    if sq:
        bad = [k for k in sq if not any(k in w and _overlap_ge(w[k], sq[k]) for w in wb)]
        sanity["black_box_le_white_box"] = not bad
        detail["black_box_le_white_box"] = (
            f"Square beats every white-box attack at eta {', '.join(bad)}" if bad
            else "Square (black-box) error <= the best white-box error (within CI)")
    else:
        sanity["black_box_le_white_box"] = None
        detail["black_box_le_white_box"] = "Square not run"
    t_sanity, t_detail = transfer_check(results, plan.main_eta)
    sanity.update(t_sanity)
    detail.update(t_detail)
    ap = results.get("apgd-ce", {})
    if ap and pg:
        bad = [k for k in ap if k in pg and not _overlap_ge(pg[k], ap[k])]
        sanity["pgd_not_below_apgd"] = not bad
        detail["pgd_not_below_apgd"] = (
            f"our PGD-curr clearly below APGD-CE at eta {', '.join(bad)}" if bad
            else "our PGD-curr is not clearly below APGD-CE (same images, within CI)")
    else:
        sanity["pgd_not_below_apgd"] = None
        detail["pgd_not_below_apgd"] = "APGD-CE not run"
    att = {a: r for a, r in results.items() if a.startswith("attnet-curr:")}
    bad = [f"{a} {r[k]['error']:.3f} > PGD {pg[k]['error']:.3f} at eta {k}"
           for a, r in att.items() for k in r if k in pg and not _overlap_ge(pg[k], r[k])]
    sanity["attnet_le_pgd"] = None if not (att and pg) else not bad
    detail["attnet_le_pgd"] = ("no AttNet-curr or PGD-curr evaluated" if not (att and pg) else
                               "a learned attacker beats PGD-curr: " + "; ".join(bad) if bad else
                               "no AttNet-curr error above PGD-curr beyond the interval, at any eta")
    clean = results.get("clean", {}).get("0")
    key = eta_key(plan.main_eta)
    if plan.is_baseline and att and clean:
        weak = [f"{a} {r[key]['error']:.3f}" for a, r in att.items()
                if key in r and not r[key]["ci95"][0] > clean["error"]]
        sanity["attnet_attacks"] = not weak
        detail["attnet_attacks"] = (
            f"learned attacker not above the clean error {clean['error']:.3f} at eta {key}: "
            + ", ".join(weak) if weak else
            f"every AttNet-curr error is above the clean error {clean['error']:.3f} at eta {key} beyond the interval")
    else:
        sanity["attnet_attacks"] = None
        detail["attnet_attacks"] = ("checked on the baseline only" if not plan.is_baseline
                                    else "no AttNet-curr evaluated")
    return sanity, detail


def transfer_check(results: dict, main_eta: float) -> tuple[dict, dict]:
    """`transfer_le_white_box` over every transfer cell of a row (FGSM-k from other rounds and,
    once the transfer stage's cells are merged in, AttNet-transfer): no transfer attack beats
    the best white-box attack on the defender itself beyond the interval."""
    key = eta_key(main_eta)
    transfers = {a: r[key] for a, r in results.items()
                 if key in r and (a.startswith("attnet-transfer:") or re.fullmatch(r"fgsm-\d+", a))}
    white = [r[key] for a, r in results.items() if key in r and
             (a in WHITE_BOX or a.startswith("attnet-curr:"))]
    name = "transfer_le_white_box"
    if not (transfers and white):
        return {name: None}, {name: "no transfer attack evaluated"}
    best = max(white, key=lambda c: c["error"])
    bad = [a for a, c in transfers.items() if not _overlap_ge(best, c)]
    detail = (f"transfer beats the best white-box attack ({best['error']:.3f}) at eta {key}: "
              + ", ".join(f"{a} {transfers[a]['error']:.3f}" for a in bad) if bad
              else f"every transfer attack <= best white-box error {best['error']:.3f} at eta {key}")
    return {name: not bad}, {name: detail}
