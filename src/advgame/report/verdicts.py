""""Does the paper hold?": a verdict on every Table 5 cell, on Figure 1's shape and on each claim of
the abstract, each from a stated rule over our numbers. The same list goes into
reports/results.json (`verdicts`), so a script can read what the report says.

Verdicts: "reproduced", "not reproduced", "not comparable" (we have no number to judge by).
"""
from __future__ import annotations

import math

from advgame import attack_table
from advgame.evaluation.paired import ALPHA
from advgame.report.answers import ABL_CONTROL, q2_explanation
from advgame.report.study import Study
from advgame.report.tables import PAPER_NAMES, PAPER_TABLE5, md_table

REPRO, NOT, NA = "reproduced", "not reproduced", "not comparable"


def _entry(claim, paper, ours, verdict, why, ci95=None) -> dict:
    return {"claim": claim, "paper": paper, "ours": ours, "ci95": ci95, "verdict": verdict, "why": why}


def table5_cell(s: Study, d: str, attack: str, eta: str) -> dict | None:
    """Our cell for the paper's Table 5: the evaluation at the main eta, the table5 stage elsewhere."""
    name = {c: n for c, n, _ in attack_table.paper_columns(s.params.table5.arch)}[attack]
    c = s.get(d, name, eta) if eta == s.eta else s.table5.get(d, {}).get(name, {}).get(eta)
    return c if isinstance(c, dict) and c.get("error") is not None else None


def table5_verdicts(s: Study) -> list[dict]:
    out = []
    for d, by_eta in PAPER_TABLE5.items():
        for eta, values in by_eta.items():
            for (attack, _, label), paper in zip(attack_table.paper_columns(s.params.table5.arch), values):
                claim = f"table5:{d}:{attack}:{eta}"
                c = table5_cell(s, d, attack, eta)
                if c is None or not c.get("ci95"):
                    why = (f"{d} is not in this study" if d not in s.defenders else
                           f"no {label} number for {d} at eta {eta} in this run")
                    out.append(_entry(claim, paper, None if c is None else c["error"], NA, why))
                    continue
                lo, hi = c["ci95"]
                ok = lo <= paper <= hi
                why = (f"the paper's {paper:.3f} lies {'inside' if ok else 'outside'} our 95% interval "
                       f"{lo:.3f}-{hi:.3f} (n = {c.get('n')}; {PAPER_NAMES[d]}, {label}, eta {eta})")
                out.append(_entry(claim, paper, c["error"], REPRO if ok else NOT, why, [lo, hi]))
    return out


def curve_shape(s: Study) -> dict | None:
    """Figure 1's shape from the curve: swings = sign changes of the next-attack error between
    rounds; settled = the last half of the rounds lies within one 95% interval width (at the
    cat-and-mouse stage's n) of its mean."""
    ys = [r["next_attack"] for r in s.catmouse if r.get("next_attack") is not None]
    if len(ys) < 3:
        return None
    steps = [b - a for a, b in zip(ys, ys[1:])]
    swings = sum(x * y < 0 for x, y in zip(steps, steps[1:]))
    tail = ys[len(ys) // 2:]
    m = sum(tail) / len(tail)
    n = s.catmouse_n or 0
    width = 2 * 1.96 * math.sqrt(max(m * (1 - m), 1e-9) / n) if n else math.nan
    spread = max(tail) - min(tail)
    return {"swings": swings, "possible": len(steps) - 1, "spread": spread, "width": width,
            "oscillates": swings >= (len(steps) - 1) / 2, "settled": n > 0 and spread <= width,
            "first": ys[0], "last": ys[-1], "rounds": len(ys), "n": n}


def shape_verdicts(s: Study) -> list[dict]:
    c = curve_shape(s)
    paper_fig = "oscillates and does not settle (about 0.98 down to about 0.45 after 80 rounds, still swinging)"
    paper_game = "the cat-and-mouse game does not settle"
    if c is None:
        why = "fewer than 3 cat-and-mouse rounds in this run"
        return [_entry("fig1:shape", paper_fig, None, NA, why), _entry("abstract:catmouse-does-not-settle", paper_game, None, NA, why)]
    facts = (f"next-attack error {c['first']:.3f} at round 1, {c['last']:.3f} at round {c['rounds']}; "
             f"{c['swings']} of {c['possible']} possible changes of direction; the last half of the rounds "
             f"spans {c['spread']:.3f} against a 95% interval width of {c['width']:.3f} at n = {c['n']}")
    if not c["n"]:  # without the number of images there is no interval to judge "settled" by
        why = f"the cat-and-mouse stages do not record their number of test images; {facts}"
        return [_entry("fig1:shape", paper_fig, c["last"], NA, why),
                _entry("abstract:catmouse-does-not-settle", paper_game, c["last"], NA, why)]
    fig = REPRO if c["oscillates"] and not c["settled"] else NOT
    game = NOT if c["settled"] else REPRO
    return [_entry("fig1:shape", paper_fig, c["last"], fig,
                   f"{'oscillates' if c['oscillates'] else 'does not oscillate'} and "
                   f"{'settles' if c['settled'] else 'does not settle'}: {facts}"),
            _entry("abstract:catmouse-does-not-settle", paper_game, c["last"], game,
                   f"{'settles' if c['settled'] else 'does not settle'}: {facts}")]


def _pair_verdict(claim, paper, pr, want: str, what: str) -> dict:
    if pr is None:
        return _entry(claim, paper, None, NA, f"no numbers for {what} in this run")
    if pr.p is None:
        return _entry(claim, paper, pr.ea, NA, f"{what}: {pr.text()}")
    ok = pr.direction == want
    return _entry(claim, paper, pr.ea, REPRO if ok else NOT, f"{what}: {pr.text()}; real only at p < {ALPHA} "
                  "on every training seed")


def claim_verdicts(s: Study) -> list[dict]:
    arch = s.params.table5.arch
    out = [_pair_verdict("abstract:minimax-more-robust-than-alt", "minimax is more robust than alt",
                         s.pair("minimax", f"attnet-curr:{arch}", "alt"), "lower",
                         f"AttNet-curr ({arch}, the paper's measure) at eta {s.eta}")]
    wc = s.pair("minimax", "worst-case", "alt")
    if wc is not None and out[0]["verdict"] != NA:
        out[0]["why"] += f"; under worst-case: {wc.text()}"
    cm = sorted((d for d in s.defenders if d.startswith("adv-fgsm-")), key=lambda d: int(d.split("-")[-1]))
    sens = _pair_verdict("abstract:sens-fgsm-robust-to-fgsm-curr",
                         "Sens-FGSM is robust to FGSM-curr (FGSM-81), unlike the cat-and-mouse classifiers",
                         s.pair("sens-fgsm", "fgsm-curr", cm[-1]) if cm else None, "lower",
                         f"FGSM-curr at eta {s.eta} against the last cat-and-mouse classifier")
    kind, _ = q2_explanation(s)
    if sens["verdict"] == REPRO and kind != "not run":
        sens["why"] += (f"; the ablation against `{ABL_CONTROL}` supports "
                        + {"sensitivity": "the sensitivity term as the cause",
                           "masking": "a masked gradient, not robustness",
                           "none": "no effect of the sensitivity term", "mixed": "neither explanation alone"}[kind])
    if (pgd := s.get("sens-fgsm", "pgd-curr")) and sens["verdict"] != NA:
        sens["why"] += f"; under PGD-curr its error is {pgd['error']:.3f}"
    out.append(sens)
    out.extend(shape_verdicts(s)[1:])
    return out


def all_verdicts(s: Study) -> list[dict]:
    return table5_verdicts(s) + shape_verdicts(s)[:1] + claim_verdicts(s)


def section(verdicts: list[dict]) -> str:
    counts = {v: sum(e["verdict"] == v for e in verdicts) for v in (REPRO, NOT, NA)}
    body = [[f"`{e['claim']}`", e["paper"] if isinstance(e["paper"], str) else f"{e['paper']:.3f}",
             "n/a" if e["ours"] is None else f"{e['ours']:.3f}", f"**{e['verdict']}**", e["why"]]
            for e in verdicts]
    return "\n".join([f"{counts[REPRO]} reproduced, {counts[NOT]} not reproduced, {counts[NA]} not comparable "
                      "(a Table 5 cell is reproduced when the paper's value lies in our 95% interval; a claim "
                      "when the paired test finds the paper's direction).", "",
                      md_table(["claim", "paper", "ours", "verdict", "why"], body)])
