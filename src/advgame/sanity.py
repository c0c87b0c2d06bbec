"""Gradient-masking flags of one defender's row (STUDY.md "The evaluation"): PGD >= FGSM, the
error grows to ~1 with eta, black-box <= white-box, transfer <= white-box, our PGD not below
APGD, learned attackers not above PGD, and (baseline) learned attackers above the clean error."""
from __future__ import annotations

import re

from .config import eta_key

# white-box attacks on the defender itself (the bar a transfer attack must not beat)
WHITE_BOX = ("fgsm-curr", "pgd-curr", "pgd-adaptive", "apgd-ce", "apgd-dlr", "apgd-t")
# cells of attacks crafted on another model and applied to the defender
TRANSFER = re.compile(r"fgsm-\d+|attnet-transfer:.*|pgd-transfer:.*")


def _overlap_ge(a: dict, b: dict) -> bool:
    """a is not clearly below b: a's interval reaches b's error or b's reaches a's. (One-sided,
    a Wilson upper bound is below 1 whenever one image is missed: 0.998 vs 1.000 is no failure.)"""
    return a["ci95"][1] >= b["error"] or b["ci95"][0] <= a["error"]


def sanity_checks(results: dict, plan, large_eta_pgd: dict, sanity_attack: str = "pgd-curr") -> tuple[dict, dict]:
    """Gradient-masking flags (STUDY.md): True = pass, False = fail, None = not computable.
    `sanity_attack` is the defender's full white-box PGD: pgd-curr, or pgd-adaptive for a
    defender with a detector (pgd-curr ignores the detector there, while APGD and the learned
    attackers do not). It is the attack of `error_grows_to_one` (`large_eta_pgd` is its cell at
    plan.sanity_eta) and the PGD that `pgd_not_below_apgd` and `attnet_le_pgd` compare with."""
    sanity: dict[str, bool | None] = {}
    detail: dict[str, str] = {}
    pg, fg = results.get("pgd-curr", {}), results.get("fgsm-curr", {})
    bad = [k for k in pg if k in fg and not _overlap_ge(pg[k], fg[k])]
    sanity["pgd_ge_fgsm"] = not bad
    detail["pgd_ge_fgsm"] = (f"PGD below FGSM at eta {', '.join(bad)}" if bad
                             else "PGD-curr error >= FGSM-curr error at every eta (within CI)")
    grow = results.get(sanity_attack, {})
    etas = sorted(grow, key=float)
    mono = all(grow[b]["ci95"][1] >= grow[a]["error"] for a, b in zip(etas, etas[1:]))
    top = large_eta_pgd.get("error") if large_eta_pgd else None
    sanity["error_grows_to_one"] = bool(mono and (top is None or top >= 0.95))
    detail["error_grows_to_one"] = (
        f"{sanity_attack} error by eta: " + ", ".join(f"{e}: {grow[e]['error']:.3f}" for e in etas)
        + (f"; at eta {plan.sanity_eta}: {top:.3f} (must be >= 0.95)" if top is not None else ""))
    sq = results.get("square", {})
    wb = [results.get(a, {}) for a in ("pgd-curr", "pgd-adaptive", "apgd-ce", "apgd-dlr", "apgd-t")]
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
    ref = results.get(sanity_attack) or pg  # our full white-box PGD (detector-aware where there is one)
    if ap and ref:
        bad = [k for k in ap if k in ref and not _overlap_ge(ref[k], ap[k])]
        sanity["pgd_not_below_apgd"] = not bad
        detail["pgd_not_below_apgd"] = (
            f"our {sanity_attack} clearly below APGD-CE at eta {', '.join(bad)}" if bad
            else f"our {sanity_attack} is not clearly below APGD-CE (same images, within CI)")
    else:
        sanity["pgd_not_below_apgd"] = None
        detail["pgd_not_below_apgd"] = "APGD-CE not run"
    att = {a: r for a, r in results.items() if a.startswith("attnet-curr:")}
    bad = [f"{a} {r[k]['error']:.3f} > {sanity_attack} {ref[k]['error']:.3f} at eta {k}"
           for a, r in att.items() for k in r if k in ref and not _overlap_ge(ref[k], r[k])]
    sanity["attnet_le_pgd"] = None if not (att and ref) else not bad
    detail["attnet_le_pgd"] = ("no AttNet-curr or PGD evaluated" if not (att and ref) else
                               f"a learned attacker beats {sanity_attack}: " + "; ".join(bad) if bad else
                               f"no AttNet-curr error above {sanity_attack} beyond the interval, at any eta")
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
    """`transfer_le_white_box` over every transfer cell of a row (FGSM-k from other rounds, PGD
    from the baseline and, once the transfer stage's cells are merged in, AttNet-transfer): no
    transfer attack beats the best white-box attack on the defender itself beyond the interval."""
    key = eta_key(main_eta)
    transfers = {a: r[key] for a, r in results.items() if key in r and TRANSFER.fullmatch(a)}
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
