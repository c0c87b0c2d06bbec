"""Error rates with Wilson intervals, and the cross-evaluation of one defender against every
attack at every eta (the rows of reports/eval/<defender>.json, see STUDY.md's results contract).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from .art_attacks import art_attack
from .attacks import attnet, ce_loss, fgsm, pgd
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
    transfer_attackers: dict[tuple[str, str], nn.Module] = field(default_factory=dict)
    art_attacks: list[str] = field(default_factory=list)
    art_etas: list[float] = field(default_factory=list)
    art_n: int = 200
    apgd_iters: int = 50
    square_queries: int = 500
    classes: int = 10
    sanity_eta: float = 1.0


def _pgd(defender: Defender, x, y, eta, plan: Plan, seed: int, target: nn.Module | None = None,
         loss=None):
    # with a detector, success = misclassified and not rejected, kept from any step
    success = None if defender.reject is None else (
        lambda xa, ya: defender.errors(xa, ya, clean=False, batch=len(xa)))
    return pgd(target or defender.model, x, y, eta, steps=plan.pgd_steps,
               step_size=plan.pgd_step_ratio * eta / plan.pgd_steps, restarts=plan.pgd_restarts,
               seed=seed, batch=plan.batch, loss=loss or defender.attack_loss, success=success)


def evaluate_defender(defender: Defender, x: torch.Tensor, y: torch.Tensor, plan: Plan,
                      progress=lambda msg: None) -> dict:
    """Every attack of the plan at every eta; returns {"results", "sanity", "sanity_detail"}."""
    S = plan.seeds
    err = lambda xa, clean=False: defender.errors(xa, y[: len(xa)], clean, plan.batch)  # noqa: E731
    results: dict[str, dict[str, dict]] = {}
    clean_mask = err(x, clean=True)
    results["clean"] = {"0": cell([clean_mask])}
    art_n = min(plan.art_n, len(x))
    for eta in plan.etas:
        key = eta_key(eta)
        masks: dict[str, list[torch.Tensor]] = {}
        progress(f"eta {key}: fgsm")
        for k, src in plan.fgsm_sources.items():
            masks[f"fgsm-{k}"] = [err(fgsm(src, x, y, eta, plan.batch))] * len(S)
        masks["fgsm-curr"] = [err(fgsm(defender.model, x, y, eta, plan.batch, defender.attack_loss))] * len(S)
        progress(f"eta {key}: pgd")
        masks["pgd-curr"] = [err(_pgd(defender, x, y, eta, plan, s)) for s in S]
        if defender.reject is not None:  # grey-box: the attacker sees the bare classifier only
            masks["fgsm-curr:grey-box"] = [err(fgsm(defender.classifier, x, y, eta, plan.batch))] * len(S)
            masks["pgd-curr:grey-box"] = [err(_pgd(defender, x, y, eta, plan, s, defender.classifier, ce_loss))
                                          for s in S]
        for arch, h in plan.own_attackers.items():
            masks[f"attnet-curr:{arch}"] = [err(attnet(h, x, eta, plan.batch))] * len(S)
        if math.isclose(eta, plan.main_eta):
            for (src, arch), h in plan.transfer_attackers.items():
                masks[f"attnet-transfer:{src}:{arch}"] = [err(attnet(h, x, eta, plan.batch))] * len(S)
        if any(math.isclose(eta, e) for e in plan.art_etas):
            for name in plan.art_attacks:
                progress(f"eta {key}: {name}")
                masks[name] = [err(art_attack(name, defender.model, x[:art_n], y[:art_n], eta,
                                              plan.classes, plan.apgd_iters, plan.square_queries,
                                              seed=s, batch=plan.batch)) for s in S]
        worst = []
        for i in range(len(S)):
            w = clean_mask.clone()
            for m in masks.values():
                w[: len(m[i])] |= m[i]
            worst.append(w)
        masks["worst-case"] = worst
        for name, ms in masks.items():
            results.setdefault(name, {})[key] = cell(ms)
        if any(a in masks for a in plan.art_attacks):  # our PGD on ART's images, to compare
            results.setdefault("pgd-curr:art-subset", {})[key] = cell([m[:art_n] for m in masks["pgd-curr"]])
    progress("sanity")
    sanity_pgd = {}
    if plan.sanity_eta:
        n = min(plan.art_n, len(x))
        sanity_pgd = cell([err(_pgd(defender, x[:n], y[:n], plan.sanity_eta, plan, S[0]))])
    sanity, detail = sanity_checks(results, plan, sanity_pgd)
    return {"results": results, "sanity": sanity, "sanity_detail": detail,
            "sanity_pgd_large_eta": {eta_key(plan.sanity_eta): sanity_pgd} if sanity_pgd else {}}


def _overlap_ge(a: dict, b: dict) -> bool:
    """a is not clearly below b: a's upper CI bound reaches b's error."""
    return a["ci95"][1] >= b["error"]


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
    wb = [results.get(a, {}) for a in ("pgd-curr:art-subset", "apgd-ce", "apgd-dlr")]
    if sq:
        bad = [k for k in sq if not any(k in w and _overlap_ge(w[k], sq[k]) for w in wb)]
        sanity["black_box_le_white_box"] = not bad
        detail["black_box_le_white_box"] = (
            f"Square beats every white-box attack at eta {', '.join(bad)}" if bad
            else "Square (black-box) error <= the best white-box error (within CI)")
    else:
        sanity["black_box_le_white_box"] = None
        detail["black_box_le_white_box"] = "Square not run"
    key = eta_key(plan.main_eta)
    transfers = {a: r[key] for a, r in results.items()
                 if key in r and (a.startswith("attnet-transfer:") or
                                  (a.startswith("fgsm-") and a[5:].isdigit()))}
    white = [results[a][key] for a in results if key in results[a] and
             (a in ("pgd-curr", "fgsm-curr") or a.startswith("attnet-curr:"))]
    if transfers and white:
        best_white = max(white, key=lambda c: c["error"])
        bad = [a for a, c in transfers.items() if not _overlap_ge(best_white, c)]
        sanity["transfer_le_white_box"] = not bad
        detail["transfer_le_white_box"] = (
            f"transfer beats the best white-box attack ({best_white['error']:.3f}) at eta {key}: "
            + ", ".join(f"{a} {transfers[a]['error']:.3f}" for a in bad) if bad
            else f"every transfer attack <= best white-box error {best_white['error']:.3f} at eta {key}")
    else:
        sanity["transfer_le_white_box"] = None
        detail["transfer_le_white_box"] = "no transfer attack evaluated"
    ap = results.get("apgd-ce", {})
    sub = results.get("pgd-curr:art-subset", {})
    if ap and sub:
        bad = [k for k in ap if k in sub and not _overlap_ge(sub[k], ap[k])]
        sanity["pgd_not_below_apgd"] = not bad
        detail["pgd_not_below_apgd"] = (
            f"our PGD clearly below ART's APGD-CE at eta {', '.join(bad)}" if bad
            else "our PGD-curr is not clearly below ART's APGD-CE (same images, within CI)")
    else:
        sanity["pgd_not_below_apgd"] = None
        detail["pgd_not_below_apgd"] = "APGD-CE not run"
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
