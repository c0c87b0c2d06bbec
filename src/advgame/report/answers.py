"""The answers to the reviewer's four questions. Every sentence that states a finding comes from a
rule over the numbers and quotes them; a difference is called real only when the paired test
across training seeds (one seed: McNemar's exact test on the same test images) gives p < 0.05
after Holm's correction within the question (paired.py). No sentence
explains a finding unless an experiment of the pipeline tests the explanation (Q2's ablations).
"""
from __future__ import annotations

from advgame import attack_table, names
from advgame.evaluation.paired import ALPHA, fmt_p, seed_interval
from advgame.evaluation.sanity import iterative_white_box
from advgame.report.controls import (
    ABL_CONTROL,
    ABL_SMOOTH,
    ABL_TAU,
    tau_of,
    architecture_did,
    masking_signature,
    q2_decomposition,
)
from advgame.report.study import Study
from advgame.report.tables import (
    BROKEN,
    FIELD,
    FLAT,
    GREY,
    attack_rank,
    fmt,
    md_table,
    next_round,
)

# the ablations as the report loads them: keyed by their file name (names.ablation_path)
TRANSFER = "pgd-transfer:baseline"


def _unseen(attack: str) -> bool:
    """Q3's attacks a defense was not trained for: PGD, APGD and Square in every form run on the
    defender (the table's iterative attacks), and PGD transferred from the baseline."""
    return attack_table.matches(attack, carry=True) or attack == TRANSFER


def failing(s: Study, d: str) -> list[str]:
    """Failing sanity checks: each puts a defender's worst-case in doubt."""
    san = s.defenders.get(d, {}).get("sanity", {})
    return sorted(c for c, ok in san.items() if ok is False)


def worst_key(s: Study, d: str) -> str | None:
    """The strongest evaluation a defender has: worst-case (which includes the adaptive attack
    where one ran), else PGD, else FGSM."""
    return next((a for a in ("worst-case", "pgd-curr", "fgsm-curr") if s.get(d, a)), None)


def _said(pr, lower: str, higher: str, same: str) -> str:
    """The rule's sentence for one paired comparison; without per-image outcomes no difference
    is called either way."""
    if pr.p is None:
        return f"not tested: {pr.text()}"
    return {"lower": lower, "higher": higher, "same": unshown(pr, same)}[pr.direction] + f" ({pr.text()})"


def leaning(pr) -> str | None:
    """'lower' / 'higher' when a paired difference goes uncalled only for want of training seeds:
    McNemar's p < ALPHA at the main seed and every seed the same way, while the test across the
    seeds (few of them, after Holm's correction) is not below ALPHA; else None."""
    if pr.real or pr.p is None or pr.p_seeds is None or pr.p >= ALPHA or pr.seeds_agree != pr.seeds:
        return None
    return "lower" if pr.ea < pr.eb else "higher"


def unshown(pr, same: str) -> str:
    """The words for a difference the rule does not call: `same`, and, where every training seed
    has it the same way but the test across so few seeds cannot call it, which way."""
    way = leaning(pr)
    return same if not way else f"{same}, though {way} at each of its {pr.seeds} training seeds (the test across " \
                                "the seeds, Holm-corrected, does not call it)"


def ranking(s: Study) -> list[tuple]:
    """(rank, error, defender, evaluation, tie) by the main seed's strongest evaluation, lowest
    first; a defender takes the rank of the one above when their paired difference is not real
    (`tie` is that comparison, else None), so an order that one training seed reverses is a tie."""
    ranked = sorted((e["error"], d, k) for d in s.defenders if (k := worst_key(s, d)) and (e := s.get(d, k)))
    out: list[tuple] = []
    for i, (e, d, k) in enumerate(ranked):
        tie = None
        if out:
            _, _, pd, pk, _ = out[-1]
            pr = s.pair(pd, pk, d, k)
            tie = pr if pr is not None and pr.direction != "lower" else None
        out.append((out[-1][0] if tie else i + 1, e, d, k, tie))
    return out


def q1(s: Study) -> str:
    ours = [d for d in ("sens-fgsm", "minimax") if d in s.defenders]
    field_ = [d for d in FIELD if d in s.defenders]
    if not ours or not field_:
        return ("Not answerable in this run: it needs sens-fgsm or minimax and at least one of "
                f"{', '.join(FIELD)} (evaluated: {', '.join(s.defenders) or 'none'}).")
    out = [f"Ranking by each defender's strongest evaluation at eta {s.eta} ({s.subset()}; lowest "
           "error first; `worst-case` = an image counts as an error if any attack fools the defender, "
           "MagNet's adaptive attack included where it ran). A defender shares the rank of the one "
           "above it when their difference is not shown (p < 0.05, Holm-adjusted within this question, by "
           "the paired test across the training seeds that measured both, else McNemar's on the same "
           "images at the main seed):", ""]
    for rank, e, d, k, tie in ranking(s):
        bad = failing(s, d)
        flag = f" - sanity checks fail: {', '.join(f'`{c}`' for c in bad)}, so the attacks may be too weak " \
               "here: this error is a lower bound, not evidence of robustness" if bad else ""
        spread, n = s.seeds.per_seed(d, k, s.eta), (s.get(d, k) or {}).get("n") or 0
        mean = (" (mean over {} training seeds {:.3f}, 95% interval {:.3f}-{:.3f})".format(
            len(spread), *seed_interval(spread, n)) if spread else "")
        same = f"; not shown to differ from the one above: {tie.text()}" if tie else ""
        out.append(f"{rank}. `{d}` {k} {e:.3f}{mean}{flag}{same}")
    out.append("")
    key = "worst-case" if all(s.get(d, "worst-case") for d in ours + field_) else "pgd-curr"
    for d in ours:
        bits = [_said(pr, f"lower than `{f}`", f"higher than `{f}`", f"no difference shown from `{f}`")
                for f in field_ if (pr := s.pair(d, key, f))]
        out.append(f"- `{d}` under `{key}`: " + "; ".join(bits) + "." if bits else f"- `{d}`: n/a.")
    grey = [(a, e) for a in ("fgsm-curr", "pgd-curr") if (e := s.get("magnet", a + GREY))]
    if grey:
        out.append("MagNet in its own grey-box setting (the attacker sees the bare classifier only): "
                   + ", ".join(f"{a} {fmt(e)}" for a, e in grey) + ".")
    out += _magnet_adaptive(s)
    return "\n".join(out)


def _magnet_adaptive(s: Study) -> list[str]:
    """One sentence on MagNet under attacks that see its detector, only when it is evaluated."""
    if "magnet" not in s.defenders:
        return []
    cell, curve = s.get("magnet", "pgd-adaptive"), s.strength.get("magnet")
    ours = [f"`pgd-adaptive` {fmt(cell)}" if cell else "",
            f"the union of its attack-strength grid {curve['union']['error']:.3f} at eta {curve['eta']:g}"
            if curve else ""]
    ours = [o for o in ours if o]
    return ["MagNet: the literature found it broken by adaptive attacks that see the detector (Carlini & "
            "Wagner 2017, arXiv 1711.08478); our adaptive attack, which differentiates detector, reformer "
            f"and classifier, gets {' and '.join(ours) if ours else 'n/a (it did not run)'}."]


def _ablation_rows(s: Study) -> list[str]:
    """Sens-FGSM and every ablation under each attack they share (a table with the subset)."""
    names = ["sens-fgsm", *s.ablations]
    attacks = sorted({a for n in names for a in (s.obj(n) or {}).get("results", {})
                      if a != "clean" and (a in ("fgsm-curr", "pgd-curr", TRANSFER) or a.startswith("fgsm-"))},
                     key=attack_rank)
    body = [[f"`{n}`", *[fmt(_cell(s, n, a), False) for a in attacks]] for n in names]
    return [f"Sens-FGSM and its ablations at eta {s.eta} ({s.subset()}):", "",
            md_table(["model", *attacks], body), ""]


def _cell(s: Study, name: str, attack: str) -> dict | None:
    c = (s.obj(name) or {}).get("results", {}).get(attack, {}).get(s.eta)
    return c if isinstance(c, dict) and c.get("error") is not None else None


def _main_seed(pr) -> str:
    """A comparison's direction; where one side was not run at the other training seeds (the
    ablations), the main seed's paired test alone decides it (and the text says so)."""
    if pr.unmeasured and pr.p is not None and pr.p < ALPHA:
        return "lower" if pr.ea < pr.eb else "higher"
    return pr.direction


def q2_explanation(s: Study) -> tuple[str, list[str]]:
    """Which explanation the ablation supports: 'sensitivity', 'masking', 'none' (no FGSM-curr
    advantage over the control), 'mixed' or 'not run'; with the sentences that show it."""
    if ABL_CONTROL not in s.ablations or "sens-fgsm" not in s.defenders:
        return "not run", [f"The ablation did not run (no `{names.ablation_path(ABL_CONTROL)}`), so no "
                           "explanation of Sens-FGSM's FGSM-curr error is offered."]
    own = s.pair("sens-fgsm", "fgsm-curr", ABL_CONTROL)
    if own is None:
        return "not run", ["The control has no FGSM-curr number at this eta; no explanation is offered."]
    lines = [f"Control (`{ABL_CONTROL}`: the sensitivity term off, the FGSM-AT objective on Sens-FGSM's "
             f"schedule and data) under each model's own FGSM-curr: {own.text()}."]
    others = [a for a in (TRANSFER, "pgd-curr") if _cell(s, ABL_CONTROL, a) and s.get("sens-fgsm", a)]
    others += [a for a in sorted((s.obj(ABL_CONTROL) or {}).get("results", {}), key=attack_rank)
               if a.startswith("fgsm-") and a != "fgsm-curr" and _cell(s, ABL_CONTROL, a) and s.get("sens-fgsm", a)]
    prs = [pr for a in others if (pr := s.pair("sens-fgsm", a, ABL_CONTROL))]
    for a, pr in zip(others, prs):
        lines.append(f"Under `{a}` (an attack neither was trained against or computed on itself): {pr.text()}.")
    if _main_seed(own) != "lower":
        verdict = "none"
        lines.append("So Sens-FGSM does not beat its control even under its own FGSM-curr: the data give the "
                     "sensitivity term no measurable effect.")
    elif prs and all(_main_seed(pr) == "lower" for pr in prs):
        verdict = "sensitivity"
        lines.append("Sens-FGSM beats the control under FGSM-curr and under every transfer/PGD attack: the data "
                     "support the sensitivity term as the cause.")
    elif not any(_main_seed(pr) == "lower" for pr in prs):
        verdict = "masking"
        lines.append("Sens-FGSM beats the control only under its own FGSM-curr; under "
                     + (", ".join(f"`{a}`" for a in others) or "no transfer attack")
                     + " it is no better: the data support a masked gradient (its own one-step direction "
                     "stops pointing uphill) rather than robustness.")
    else:
        verdict = "mixed"
        lines.append("Sens-FGSM beats the control under FGSM-curr and under some transfer/PGD attacks but not all: "
                     "the data support neither explanation alone.")
    if any(pr.unmeasured for pr in (own, *prs)):
        lines.append("The ablation was run at the main training seed only: this explanation rests on one "
                     "seed, so none of its differences is called real across seeds.")
    if ABL_SMOOTH in s.ablations and (pr := s.pair("sens-fgsm", "fgsm-curr", ABL_SMOOTH)):
        lines.append(f"`{ABL_SMOOTH}` (tanh step in the forward pass too, no straight-through) under FGSM-curr: {pr.text()}.")
    taus = sorted((n for n in s.ablations if n.startswith(ABL_TAU)), key=lambda n: tau_of(s, n))
    if taus:
        lines.append("Tau sweep under FGSM-curr / " + TRANSFER + ": " + "; ".join(
            f"tau {tau_of(s, n):g} {fmt(_cell(s, n, 'fgsm-curr'), False)} / {fmt(_cell(s, n, TRANSFER), False)}"
            for n in taus) + f" (the default tau {s.params.sens_fgsm.tau:g} is `sens-fgsm` itself).")
    return verdict, lines


def q2(s: Study) -> str:
    sf = s.get("sens-fgsm", "fgsm-curr")
    if sf is None:
        return "Not answerable in this run: sens-fgsm has no FGSM-curr result at the training eta."
    cm = sorted((d for d in s.defenders if d.startswith("adv-fgsm-")), key=lambda d: int(d.split("-")[-1]))
    which = next_round(int(cm[-1].split("-")[-1])) if cm else "the paper's FGSM-81"
    out = [f"FGSM-curr is FGSM computed against the evaluated defender's own parameters. For the last "
           f"cat-and-mouse classifier u_K it is FGSM-(K+1), the attack of the round that was never played "
           f"({which}); Sens-FGSM is not trained for any round, so for "
           f"it FGSM-curr is its own one-step white-box attack. Numbers at eta {s.eta}, {s.subset()}."]
    if cm and (pr := s.pair("sens-fgsm", "fgsm-curr", cm[-1])):
        out.append("Under FGSM-curr, " + _said(pr, f"Sens-FGSM is lower than `{cm[-1]}`",
                                              f"Sens-FGSM is higher than `{cm[-1]}`",
                                              f"Sens-FGSM is not shown to differ from `{cm[-1]}`") + ".")
    else:
        out.append(f"Sens-FGSM under FGSM-curr: {fmt(sf)}; no cat-and-mouse classifier was evaluated on the same "
                   "images, so there is nothing to compare it with.")
    if (pr := s.pair("sens-fgsm", "pgd-curr", "sens-fgsm", "fgsm-curr")):
        out.append(f"Its own PGD against its own FGSM: {pr.text()}.")
    _, lines = q2_explanation(s)
    text = " ".join(out) + "\n\n" + " ".join(lines)
    decomposition = q2_decomposition(s, cm[-1] if cm else None)
    if decomposition:
        text += "\n\n" + "\n".join(decomposition)
    signature = masking_signature(s)
    if signature:
        text += "\n\n" + signature
    if s.ablations:
        text += "\n\n" + "\n".join(_ablation_rows(s))
    return text


def q3(s: Study) -> str:
    if not s.defenders:
        return "Not answerable: no defender was evaluated."
    trained_arch = s.params.game.attacker_arch
    out = [f"At eta {s.eta}, {s.subset()}. A defense *falls flat* when some attack reaches error >= {FLAT}, "
           f"is *largely broken* at >= {BROKEN}, and *holds* when every attack stays below {BROKEN} and "
           f"its sanity checks pass. The game defenses (alt, minimax, maximin) were trained against the "
           f"`{trained_arch}` attacker.", ""]
    for d in s.defenders:
        res = s.defenders[d].get("results", {})
        names = [a for a in sorted(res, key=attack_rank) if not a.endswith(GREY) and s.get(d, a) and
                 (_unseen(a) or attack_table.matches(a, threat="learned") or attack_table.matches(a, table="transfer"))]
        if not names:
            out.append(f"- `{d}`: n/a (no attack network, PGD, APGD or Square result).")
            continue
        att = [a for a in names if a.startswith("attnet-curr:")]
        tr = [a for a in names if a.startswith("attnet-transfer:")]
        bits = []
        if att:
            bits.append("AttNet-curr " + ", ".join(f"{a.split(':')[1]} {s.get(d, a)['error']:.3f}" for a in att))
        if tr:
            worst_tr = max(tr, key=lambda a: s.get(d, a)["error"])
            bits.append(f"transferred attackers up to {s.get(d, worst_tr)['error']:.3f} "
                        f"(from {worst_tr.split(':', 1)[1]})")
        bits += [f"{a} {s.get(d, a)['error']:.3f}" for a in names if _unseen(a)]
        worst = max(names, key=lambda a: s.get(d, a)["error"])
        w = s.get(d, worst)["error"]
        bad = failing(s, d)
        verdict = "falls flat" if w >= FLAT else "largely broken" if w >= BROKEN else \
            "not shown to hold (sanity checks fail: " + ", ".join(bad) + ")" if bad else "holds"
        line = f"- `{d}`: {'; '.join(bits)}. Strongest: `{worst}` ({w:.3f}) -> **{verdict}**."
        own = f"attnet-curr:{trained_arch}"
        others = [a for a in att if a != own]
        if d in ("alt", "minimax", "maximin") and s.get(d, own) and others:
            hi = max(others, key=lambda a: s.get(d, a)["error"])
            pr = s.pair(d, hi, d, own)
            line += " Against another attacker architecture: " + _said(
                pr, "lower than against its own", "higher than against its own", "no difference shown") + "."
        out.append(line)
    did = architecture_did(s)
    if did:
        out += ["", did]
    return "\n".join(out)


def q4(s: Study) -> str:
    if "minimax" not in s.defenders:
        return "Not answerable in this run: minimax was not evaluated (n/a)."
    base = [d for d in ("alt", "sens-fgsm") if d in s.defenders]
    if not base:
        return "Not answerable in this run: neither alt nor sens-fgsm was evaluated (n/a)."
    names = sorted({a for d in ["minimax", *base] for a in s.defenders[d].get("results", {})
                    if iterative_white_box(a) or attack_table.matches(a, threat="learned") or a == "worst-case"},
                   key=attack_rank)
    body, tally = [], {"lower": 0, "higher": 0, "same": 0, "untested": 0}
    for a in names:
        cells = [fmt(s.get("minimax", a), False)]
        for b in base:
            pr = s.pair("minimax", a, b)
            if pr:
                tally["untested" if pr.p is None else pr.direction] += 1
            cells += [fmt(s.get(b, a), False), "n/a" if pr is None else "not tested (no per-image outcomes)" if pr.p is None else
                      f"{ {'lower': 'minimax lower', 'higher': 'minimax higher'}.get(pr.direction) or unshown(pr, 'no difference shown')}"
                      f", p = {fmt_p(pr.p_test)}, {pr.seeds_agree}/{pr.seeds} seeds"]
        body.append([a, *cells])
    header = ["attack", "minimax"] + [x for b in base for x in (b, f"minimax vs {b}")]
    key = "worst-case" if s.get("minimax", "worst-case") else "pgd-curr"
    prs = {b: pr for b in base if (pr := s.pair("minimax", key, b))}
    quoted = "; ".join(pr.text() for pr in prs.values())
    if not prs:
        verdict = f"Not answerable: no `{key}` numbers to compare."
    elif any(pr.p is None for pr in prs.values()):
        verdict = f"**Not tested**: no paired test under `{key}` at eta {s.eta}: {quoted}."
    elif all(pr.direction == "lower" for pr in prs.values()):
        verdict = f"**Yes**: under `{key}` at eta {s.eta} minimax is lower than every baseline: {quoted}."
    elif any(pr.direction == "higher" for pr in prs.values()):
        worse = [b for b, pr in prs.items() if pr.direction == "higher"]
        verdict = (f"**No**: under `{key}` at eta {s.eta} minimax is higher than "
                   f"{', '.join(f'`{b}`' for b in worse)}: {quoted}.")
    elif any(pr.direction == "lower" for pr in prs.values()):
        same = [b for b, pr in prs.items() if pr.direction != "lower"]
        lower = [b for b, pr in prs.items() if pr.direction == "lower"]
        verdict = (f"**Not better than every baseline** under `{key}` at eta {s.eta}: no difference shown from "
                   f"{', '.join(f'`{b}`' for b in same)}; lower than {', '.join(f'`{b}`' for b in lower)}: {quoted}.")
    else:
        verdict = f"**No difference shown** under `{key}` at eta {s.eta}: {quoted}."
    summary = (f"Across the strong attacks below ({s.subset()}), minimax is really lower in {tally['lower']}, "
               f"really higher in {tally['higher']}, not shown to differ in {tally['same']} and not tested (no per-image "
               f"outcomes) in {tally['untested']} comparisons.")
    return "\n".join([*_against_every_defense(s, key), "", "Against the paper's baselines: " + verdict, summary, "",
                       md_table(header, body)])


def _against_every_defense(s: Study, key: str) -> list[str]:
    """Minimax under `key` against every other defender, the most robust first (paired tests,
    in Q4's Holm family)."""
    others = sorted((d for d in s.defenders if d != "minimax" and s.get(d, key)),
                    key=lambda d: (s.get(d, key)["error"], d))
    if not others:
        return []
    words = {"lower": "minimax lower", "higher": "minimax higher"}
    lines = [f"Minimax ({fmt(s.get('minimax', key), False)}) against every defense under `{key}` at eta {s.eta}, "
             "the most robust first:"]
    for d in others:
        pr = s.pair("minimax", key, d)
        how = ("not tested (no per-image outcomes)" if pr is None or pr.p is None else
               f"{words.get(pr.direction) or unshown(pr, 'no difference shown')} (p = {fmt_p(pr.p_test)}"
               + (f", Holm {fmt_p(pr.p_holm)}" if pr.p_holm is not None else "") + f", {pr.seeds_agree}/{pr.seeds} seeds"
               + (f"; {', '.join(f'`{u}`' for u in pr.unmeasured)} not run at the other training seeds"
                  if pr.unmeasured else "") + ")")
        lines.append(f"- `{d}` {s.get(d, key)['error']:.3f}: {how}")
    return lines
