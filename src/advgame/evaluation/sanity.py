"""Gradient-masking flags of one defender's row (docs/protocol.md, "The evaluation"): PGD >= FGSM, the
error grows to ~1 with eta, black-box <= white-box, transfer <= white-box, our PGD not below
APGD, learned attackers not above PGD, and (baseline) learned attackers above the clean error."""
from __future__ import annotations

from advgame import attack_table
from advgame.config import eta_key

# the two attacks each pairwise check compares (the first is the defender's full white-box PGD:
# pgd-curr, or pgd-adaptive with a detector); the report prints the numbers behind a failure
SQUARE, APGD_CE = "square", "apgd-ce"
PAIRS = {"pgd_not_below_apgd": (None, APGD_CE), "black_box_le_white_box": (SQUARE, APGD_CE)}


def white_box(attack: str) -> bool:
    """An attack on the defender itself, the bar a transfer attack must not beat: the table's
    white-box attacks on every image (not the ART check's subset) and the learned attackers."""
    return attack_table.matches(attack, threat="white-box", subset=False) or \
        attack_table.matches(attack, threat="learned")


def iterative_white_box(attack: str) -> bool:
    """PGD and APGD in their forms (the attacks Square must not beat)."""
    return attack_table.matches(attack, threat="white-box", carry=True)


def _overlap_ge(a: dict, b: dict) -> bool:
    """a is not clearly below b: a's interval reaches b's error or b's reaches a's. (One-sided,
    a Wilson upper bound is below 1 whenever one image is missed: 0.998 vs 1.000 is no failure.)"""
    return a["ci95"][1] >= b["error"] or b["ci95"][0] <= a["error"]


def sanity_checks(results: dict, plan, large_eta_pgd: dict, sanity_attack: str = "pgd-curr") -> tuple[dict, dict]:
    """Gradient-masking flags (docs/protocol.md): True = pass, False = fail, None = not computable.
    `sanity_attack` is the defender's full white-box PGD: pgd-curr, or pgd-adaptive for a
    defender with a detector (pgd-curr ignores the detector there, while APGD and the learned
    attackers do not). It is the attack of `error_grows_to_one` (`large_eta_pgd` is its cell at
    plan.sanity_eta) and the PGD that `pgd_not_below_apgd` and `attnet_le_pgd` compare with."""
    sanity: dict[str, bool | None] = {}
    detail: dict[str, str] = {}
    ref = results.get(sanity_attack) or results.get("pgd-curr", {})  # our full white-box PGD
    for check in (_pgd_ge_fgsm(results), _grows(results, plan, large_eta_pgd, sanity_attack),
                  _black_box(results), transfer_check(results, plan.main_eta),
                  _pgd_vs_apgd(results, ref, sanity_attack), _attnet_le_pgd(results, ref, sanity_attack),
                  _attnet_attacks(results, plan)):
        sanity.update(check[0])
        detail.update(check[1])
    return sanity, detail


def _pgd_ge_fgsm(results: dict) -> tuple[dict, dict]:
    pg, fg = results.get("pgd-curr", {}), results.get("fgsm-curr", {})
    bad = [k for k in pg if k in fg and not _overlap_ge(pg[k], fg[k])]
    return {"pgd_ge_fgsm": not bad}, {"pgd_ge_fgsm": f"PGD below FGSM at eta {', '.join(bad)}" if bad
                                      else "PGD-curr error >= FGSM-curr error at every eta (within CI)"}


def _grows(results: dict, plan, large_eta_pgd: dict, sanity_attack: str) -> tuple[dict, dict]:
    grow = results.get(sanity_attack, {})
    etas = sorted(grow, key=float)
    mono = all(grow[b]["ci95"][1] >= grow[a]["error"] for a, b in zip(etas, etas[1:]))
    top = large_eta_pgd.get("error") if large_eta_pgd else None
    return {"error_grows_to_one": bool(mono and (top is None or top >= 0.95))}, {"error_grows_to_one": (
        f"{sanity_attack} error by eta: " + ", ".join(f"{e}: {grow[e]['error']:.3f}" for e in etas)
        + (f"; at eta {plan.sanity_eta}: {top:.3f} (must be >= 0.95)" if top is not None else ""))}


def _black_box(results: dict) -> tuple[dict, dict]:
    name = "black_box_le_white_box"
    sq = results.get(SQUARE, {})
    if not sq:
        return {name: None}, {name: "Square not run"}
    wb = [r for a, r in results.items() if iterative_white_box(a)]
    bad = [k for k in sq if not any(k in w and _overlap_ge(w[k], sq[k]) for w in wb)]
    return {name: not bad}, {name: f"Square beats every white-box attack at eta {', '.join(bad)}" if bad
                             else "Square (black-box) error <= the best white-box error (within CI)"}


def _pgd_vs_apgd(results: dict, ref: dict, sanity_attack: str) -> tuple[dict, dict]:
    name = "pgd_not_below_apgd"
    ap = results.get(APGD_CE, {})
    if not (ap and ref):
        return {name: None}, {name: "APGD-CE not run"}
    bad = [k for k in ap if k in ref and not _overlap_ge(ref[k], ap[k])]
    return {name: not bad}, {name: f"our {sanity_attack} clearly below APGD-CE at eta {', '.join(bad)}" if bad
                             else f"our {sanity_attack} is not clearly below APGD-CE (same images, within CI)"}


def _attnet_le_pgd(results: dict, ref: dict, sanity_attack: str) -> tuple[dict, dict]:
    att = {a: r for a, r in results.items() if attack_table.matches(a, threat="learned")}
    bad = [f"{a} {r[k]['error']:.3f} > {sanity_attack} {ref[k]['error']:.3f} at eta {k}"
           for a, r in att.items() for k in r if k in ref and not _overlap_ge(ref[k], r[k])]
    return {"attnet_le_pgd": None if not (att and ref) else not bad}, {"attnet_le_pgd": (
        "no AttNet-curr or PGD evaluated" if not (att and ref) else
        f"a learned attacker beats {sanity_attack}: " + "; ".join(bad) if bad else
        f"no AttNet-curr error above {sanity_attack} beyond the interval, at any eta")}


def _attnet_attacks(results: dict, plan) -> tuple[dict, dict]:
    name = "attnet_attacks"
    att = {a: r for a, r in results.items() if attack_table.matches(a, threat="learned")}
    clean = results.get("clean", {}).get("0")
    key = eta_key(plan.main_eta)
    if not (plan.is_baseline and att and clean):
        return {name: None}, {name: "checked on the baseline only" if not plan.is_baseline else "no AttNet-curr evaluated"}
    weak = [f"{a} {r[key]['error']:.3f}" for a, r in att.items()
            if key in r and not r[key]["ci95"][0] > clean["error"]]
    return {name: not weak}, {name: (
        f"learned attacker not above the clean error {clean['error']:.3f} at eta {key}: " + ", ".join(weak) if weak
        else f"every AttNet-curr error is above the clean error {clean['error']:.3f} at eta {key} beyond the interval")}


def transfer_check(results: dict, main_eta: float) -> tuple[dict, dict]:
    """`transfer_le_white_box` over every transfer cell of a row (FGSM-k from other rounds, PGD
    from the baseline and, once the transfer stage's cells are merged in, AttNet-transfer): no
    transfer attack beats the best white-box attack on the defender itself beyond the interval."""
    key = eta_key(main_eta)
    transfers = {a: r[key] for a, r in results.items() if key in r and attack_table.matches(a, threat="transfer")}
    white = [r[key] for a, r in results.items() if key in r and white_box(a)]
    name = "transfer_le_white_box"
    if not (transfers and white):
        return {name: None}, {name: "no transfer attack evaluated"}
    best = max(white, key=lambda c: c["error"])
    bad = [a for a, c in transfers.items() if not _overlap_ge(best, c)]
    detail = (f"transfer beats the best white-box attack ({best['error']:.3f}) at eta {key}: "
              + ", ".join(f"{a} {transfers[a]['error']:.3f}" for a in bad) if bad
              else f"every transfer attack <= best white-box error {best['error']:.3f} at eta {key}")
    return {name: not bad}, {name: detail}
