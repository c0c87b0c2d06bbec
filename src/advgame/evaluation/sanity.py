"""Gradient-masking flags of one defender's row (docs/protocol.md, "The evaluation"): PGD >= FGSM, the
error grows to ~1 with eta, black-box <= white-box (Square adds almost nothing the white-box
attacks missed), transfer <= white-box, the cascade is saturated (twice its budget finds almost
nothing more), learned attackers not above PGD, and (baseline) learned attackers above the clean
error."""
from __future__ import annotations

from advgame import attack_table
from advgame.config import eta_key

SQUARE = "square"
# the share of the images that black-box Square may fool beyond every white-box attack, and that
# twice the cascade's budget may add to worst-case (AutoAttack's own saturation bar)
TOLERANCE = 0.005


def white_box(attack: str) -> bool:
    """An attack on the defender itself, the bar a transfer attack must not beat: the table's
    white-box attacks on every image (not the ART check's subset, not the cascade's entries,
    whose cells count the transfer attacks' finds too) and the learned attackers."""
    return attack_table.matches(attack, threat="white-box", subset=False, cascade=False) or \
        attack_table.matches(attack, threat="learned")


def iterative_white_box(attack: str) -> bool:
    """PGD and APGD in their forms (the report's comparisons of defenders under white-box attack)."""
    return attack_table.matches(attack, threat="white-box", carry=True)


def _overlap_ge(a: dict, b: dict) -> bool:
    """a is not clearly below b: a's interval reaches b's error or b's reaches a's. (One-sided,
    a Wilson upper bound is below 1 whenever one image is missed: 0.998 vs 1.000 is no failure.)"""
    return a["ci95"][1] >= b["error"] or b["ci95"][0] <= a["error"]


def sanity_checks(results: dict, plan, large_eta_pgd: dict, sanity_attack: str = "pgd-curr",
                  cascade: dict | None = None, saturation: dict | None = None) -> tuple[dict, dict]:
    """Gradient-masking flags (docs/protocol.md): True = pass, False = fail, None = not computable.
    `sanity_attack` is the defender's full white-box PGD: pgd-curr, or pgd-adaptive for a
    defender with a detector (there pgd-curr's loss sees the detector only through a fixed penalty
    weight and one start, pgd-adaptive searches the weights and starts: docs/protocol.md). It is the attack of `error_grows_to_one` (`large_eta_pgd` is its cell at
    plan.sanity_eta) and the PGD that `attnet_le_pgd` compares with. `cascade` is the cascade's
    counts at the main eta ({attack: {"ran_on", "new"}}), `saturation` the saturation rerun's
    (crosseval._saturation)."""
    sanity: dict[str, bool | None] = {}
    detail: dict[str, str] = {}
    ref = results.get(sanity_attack) or results.get("pgd-curr", {})  # our full white-box PGD
    for check in (_pgd_ge_fgsm(results), _grows(results, plan, large_eta_pgd, sanity_attack),
                  _black_box(results, cascade or {}, plan.main_eta), transfer_check(results, plan.main_eta),
                  _saturated(saturation or {}), _attnet_le_pgd(results, ref, sanity_attack),
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


def _black_box(results: dict, cascade: dict, main_eta: float) -> tuple[dict, dict]:
    """Square runs last in the cascade, on the images every white-box attack left: what it
    fools there it fools beyond them (a black-box attack beating white-box ones is gradient
    masking's signature)."""
    name, key = "black_box_le_white_box", eta_key(main_eta)
    sq, n = cascade.get(SQUARE), results.get("worst-case", {}).get(key, {}).get("n")
    if not (sq and n):
        return {name: None}, {name: "Square not run in the cascade"}
    share = sq["new"] / n
    ok = share <= TOLERANCE
    return {name: ok}, {name: (
        f"Square fools {sq['new']} of the {sq['ran_on']} images every white-box attack left at eta {key} "
        f"({share:.3f} of {n}; {'<=' if ok else '>'} {TOLERANCE})")}


def _saturated(sat: dict) -> tuple[dict, dict]:
    name = "saturated"
    if not sat:
        return {name: None}, {name: "saturation check not run (eval.saturation_n: 0)"}
    ok = sat["change"] <= TOLERANCE
    return {name: ok}, {name: (
        f"the cascade at twice the iterations and restarts fools {sat['more']} more of the first {sat['n']} "
        f"images at eta {sat['eta']} ({sat['attacked']} left to attack): worst-case +{sat['change']:.3f} "
        f"({'<=' if ok else '>'} {TOLERANCE})")}


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
