""""Does the paper hold?": each claim of the paper judged once, by a stated rule on seed-level
results (docs/protocol.md, section 10). The same list goes into reports/results.json
(`verdicts`), so a script can read what the report says.

- A Table 5 cell (a magnitude) by equivalence, two one-sided t-tests (`tost`, each at 0.025) on
  our mean over training seeds with the test images' own uncertainty carried in (`seed_mean`):
  both reject, i.e. the 95% interval of ours - the paper's lies inside +-margin (0.05 for an
  FGSM cell, 0.10 for an AttNet cell) -> reproduced; that interval wholly outside -> not
  reproduced; else inconclusive. Where the paper reports 0 or
  1, one-sided: the bound the paper's value sits at cannot be crossed, so only the other side is
  tested.
- The pattern of Table 5 (which defense and eta is more robust) by rank agreement: Spearman's
  rho between the paper's cells and ours with a bootstrap interval over cells, and the share of
  pairwise orderings that agree; reproduced when the interval lies above 0.5, not reproduced
  when below, else inconclusive.
- Figure 1's shape (an oscillating cat-and-mouse curve that does not settle) from the curve, and
  the claims of direction from the paired tests of evaluation/paired.py.

Verdicts: "reproduced", "not reproduced", "inconclusive", "not comparable" (no number to judge by).
"""
from __future__ import annotations

import math
import random

from scipy import stats as sstats

from advgame import attack_table, config
from advgame.evaluation.paired import ALPHA, SeedMean, fmt_p, seed_interval, seed_mean  # noqa: F401 (verdicts.seed_interval)
from advgame.report.answers import ABL_CONTROL, q2_explanation
from advgame.report.sections import paper_attacker
from advgame.report.study import Study
from advgame.report.tables import PAPER_K, PAPER_NAMES, PAPER_TABLE5, md_table, next_round, same_parity

REPRO, NOT, INCONCLUSIVE, NA = "reproduced", "not reproduced", "inconclusive", "not comparable"
VERDICTS = (REPRO, NOT, INCONCLUSIVE, NA)
MARGIN = {"fgsm-curr": 0.05, "attnet-curr": 0.10}   # per error cell (STUDY.md, "Verdicts on the paper")
RHO_BAR = 0.5            # the pattern: rank agreement above this counts as reproduced
BOOTSTRAP, BOOT_SEED = 2000, 0


def _entry(claim, paper, ours, verdict, why, ci95=None, *, kind="magnitude", rule="", margin=None,
           scope="", seeds=None) -> dict:
    return {"claim": claim, "kind": kind, "paper": paper, "ours": ours, "ci95": ci95, "verdict": verdict,
            "rule": rule, "margin": margin, "scope": scope, "seeds": seeds, "why": why}


def scope(s: Study, seeds: int | None = None) -> str:
    """Where a verdict holds: dataset, classifier, cat-and-mouse rounds K, attacker network, and
    the training seeds it rests on (`seeds`; else every seed of names.SEEDS)."""
    p = s.params
    return (f"{s.meta.get('dataset', p.data.dataset)}, classifier {config.classifier_arch(p)}, "
            f"K = {p.catmouse.rounds} cat-and-mouse rounds, AttNet {p.table5.arch}, "
            f"{seeds or (s.seeds.n if s.seeds else 1)} training seed(s)")


def tost(est: SeedMean, paper: float, margin: float) -> tuple[float | None, float | None]:
    """The two one-sided t-tests of equivalence (Schuirmann) of our mean error with the paper's:
    p of H0 "ours <= paper - margin" and of H0 "ours >= paper + margin". A side the paper's value
    sits at (0 or 1: ours cannot cross it) is not tested (None)."""
    def side(t_stat: float, upper: bool) -> float:
        if est.se == 0:
            return 0.0 if (t_stat > 0 if upper else t_stat < 0) else 1.0
        return float(sstats.t.sf(t_stat, est.df) if upper else sstats.t.cdf(t_stat, est.df))
    lower = None if paper <= 0.0 else side((est.mean - (paper - margin)) / (est.se or 1.0), True)
    upper = None if paper >= 1.0 else side((est.mean - (paper + margin)) / (est.se or 1.0), False)
    return lower, upper


def equivalence(est: SeedMean, paper: float, margin: float) -> str:
    """Reproduced when both tested one-sided tests reject at ALPHA / 2 (the 95% interval of ours -
    paper lies inside +-margin); not reproduced when that interval lies wholly outside; else
    inconclusive (the data cannot tell: underpowered, or straddling the margin)."""
    ps = [p for p in tost(est, paper, margin) if p is not None]
    if all(p < ALPHA / 2 for p in ps):
        return REPRO
    lo, hi = est.interval()
    if lo - paper > margin or hi - paper < -margin:
        return NOT
    return INCONCLUSIVE


def table5_cell(s: Study, d: str, attack: str, eta: str) -> tuple[dict | None, str]:
    """Our cell for the paper's Table 5 and the result it comes from: an AttNet cell from the
    paper's own attacker network where the table5 stage trained it (like with like), else, as
    every FGSM cell, the evaluation at the main eta and the table5 stage elsewhere."""
    name = {c: n for c, n, _ in attack_table.paper_columns(s.params.table5.arch)}[attack]
    own = s.table5.get(d, {}).get(paper_attacker(s.params.table5.arch), {}).get(eta)
    if attack == "attnet-curr" and isinstance(own, dict) and own.get("error") is not None:
        return own, paper_attacker(s.params.table5.arch)
    c = s.get(d, name, eta) if eta == s.eta else s.table5.get(d, {}).get(name, {}).get(eta)
    return (c if isinstance(c, dict) and c.get("error") is not None else None), name


def _per_seed(s: Study, d: str, name: str, eta: str, c: dict) -> list[float]:
    """Our per-seed errors of a Table 5 cell (result `name`): the seed table's (names.SEEDS) where it
    has them (its first seed is this run), else this run's alone."""
    vals = s.seeds.per_seed(d, name, eta) if s.seeds else None
    return list(vals) if vals else [c["error"]]


def table5_verdicts(s: Study) -> list[dict]:
    out, where = [], scope(s)
    for d, by_eta in PAPER_TABLE5.items():
        for eta, values in by_eta.items():
            for (attack, _, label), paper in zip(attack_table.paper_columns(s.params.table5.arch), values):
                claim = f"table5:{d}:{attack}:{eta}"
                margin = MARGIN[attack]
                bound = paper in (0.0, 1.0)
                rule = (f"one-sided bound test: the paper's {paper:.0f} sits at a bound; reproduced when ours is "
                        f"within {margin} of it" if bound else
                        f"equivalence (two one-sided tests), margin +-{margin}")
                c, name = table5_cell(s, d, attack, eta)
                if c is None or not c.get("n"):
                    why = (f"{d} is not in this study" if d not in s.defenders else
                           f"no {label} number for {d} at eta {eta} in this run")
                    out.append(_entry(claim, paper, None if c is None else c["error"], NA, why, rule=rule,
                                      margin=margin, scope=where))
                    continue
                vals = _per_seed(s, d, name, eta, c)
                est = seed_mean(vals, c["n"])
                m, (lo, hi) = est.mean, est.interval()
                dlo, dhi = round(lo - paper, 4), round(hi - paper, 4)
                verdict = equivalence(est, paper, margin)
                p_tost = max(p for p in tost(est, paper, margin) if p is not None)
                why = (f"TOST p = {fmt_p(p_tost)}; ours {m:.3f} (95% interval {lo:.3f}-{hi:.3f} over "
                       f"{len(vals)} training seed(s) on "
                       f"{c['n']} images{'; one seed: the training spread is not measured' if len(vals) == 1 else ''})"
                       f" minus the paper's {paper:.3f}: {dlo:+.3f} to {dhi:+.3f} against +-{margin} "
                       f"({PAPER_NAMES[d]}, {label} as `{name}`, eta {eta})")
                out.append(_entry(claim, paper, round(m, 4), verdict, why, [dlo, dhi], rule=rule, margin=margin,
                                  scope=scope(s, len(vals)), seeds=len(vals)))
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rho; 0 (no agreement) where a side is constant (a bootstrap draw can be)."""
    if len(set(xs)) < 2 or len(set(ys)) < 2:
        return 0.0
    return float(sstats.spearmanr(xs, ys).statistic)


def pattern_verdict(s: Study, magnitudes: list[dict]) -> dict:
    """The ordering of Table 5's cells (which defense, attack and eta errs more) in the paper and
    ours: Spearman's rho with a bootstrap 95% interval over the cells, and the share of pairwise
    orderings that agree (ties in either count as disagreement)."""
    cells = [(v["paper"], v["ours"]) for v in magnitudes if v["ours"] is not None]
    claim, paper = "table5:pattern", "the ordering of the defenses' Table 5 errors across attacks and etas"
    rule = (f"rank agreement: Spearman's rho between the paper's and our cells, bootstrap 95% interval over "
            f"cells ({BOOTSTRAP} draws); reproduced when the interval lies above {RHO_BAR}, not reproduced "
            "when below, else inconclusive")
    if len(cells) < 4:
        return _entry(claim, paper, None, NA, f"only {len(cells)} comparable cells", kind="pattern", rule=rule,
                      margin=RHO_BAR, scope=scope(s))
    xs, ys = [c[0] for c in cells], [c[1] for c in cells]
    rho = spearman(xs, ys)
    gen, draws = random.Random(BOOT_SEED), []
    for _ in range(BOOTSTRAP):
        idx = [gen.randrange(len(cells)) for _ in cells]
        draws.append(spearman([xs[i] for i in idx], [ys[i] for i in idx]))
    draws.sort()
    lo, hi = draws[int(0.025 * BOOTSTRAP)], draws[int(0.975 * BOOTSTRAP) - 1]
    pairs = [(i, j) for i in range(len(cells)) for j in range(i + 1, len(cells))]
    agree = sum((xs[i] - xs[j]) * (ys[i] - ys[j]) > 0 for i, j in pairs)
    verdict = REPRO if lo > RHO_BAR else NOT if hi < RHO_BAR else INCONCLUSIVE
    why = (f"Spearman's rho {rho:.2f} (95% interval {lo:.2f} to {hi:.2f}) over {len(cells)} cells; "
           f"{agree} of {len(pairs)} pairwise orderings agree")
    return _entry(claim, paper, round(rho, 4), verdict, why, [round(lo, 4), round(hi, 4)], kind="pattern",
                  rule=rule, margin=RHO_BAR, scope=scope(s))


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


SHAPE_RULE = ("from the next-attack error per round: it oscillates when at least half of the possible changes "
              "of direction happen, and settles when the last half of the rounds spans at most one 95% interval "
              "width at their mean; reproduced when it oscillates and does not settle")


def shape_verdicts(s: Study) -> list[dict]:
    """Figure 1's shape, which is also the abstract's "the cat-and-mouse game does not settle":
    one claim, judged once."""
    c = curve_shape(s)
    paper_fig = ("the cat-and-mouse game oscillates and does not settle (Figure 1: about 0.98 down to about "
                 "0.45 after 80 rounds, still swinging; the abstract's claim)")
    where = scope(s)

    def entry(ours, verdict, why):
        return _entry("fig1:shape", paper_fig, ours, verdict, why, kind="shape", rule=SHAPE_RULE, scope=where,
                      seeds=1)
    if c is None:
        return [entry(None, NA, "fewer than 3 cat-and-mouse rounds in this run")]
    facts = (f"next-attack error {c['first']:.3f} at round 1, {c['last']:.3f} at round {c['rounds']} (the "
             f"paper's Figure 1 runs to round {PAPER_K}: ours is judged on rounds 1-{c['rounds']}); {c['swings']} of {c['possible']} possible changes of "
             f"direction; the last half of the rounds spans {c['spread']:.3f} against a 95% interval width of "
             f"{c['width']:.3f} at n = {c['n']}")
    if not c["n"]:  # without the number of images there is no interval to judge "settled" by
        return [entry(c["last"], NA, f"the cat-and-mouse stages do not record their number of test images; {facts}")]
    fig = REPRO if c["oscillates"] and not c["settled"] else NOT
    return [entry(c["last"], fig, f"{'oscillates' if c['oscillates'] else 'does not oscillate'} and "
                  f"{'settles' if c['settled'] else 'does not settle'}: {facts}")]


PAIR_RULE = (f"the paired test across the training seeds that measured both sides (mean difference over the "
             f"seeds, the seeds' spread and the images' paired sampling error, t with Welch-Satterthwaite df; "
             f"p < {ALPHA}); with one seed, McNemar's exact test on the same images; reproduced when the "
             "difference is real in the paper's direction, not reproduced when it is real in the other, "
             "inconclusive when the test does not decide")


def _pair_verdict(s: Study, claim, paper, pr, want: str, what: str) -> dict:
    kw = dict(kind="direction", rule=PAIR_RULE, scope=scope(s))
    if pr is None:
        return _entry(claim, paper, None, NA, f"no numbers for {what} in this run", **kw)
    if pr.p is None:
        return _entry(claim, paper, pr.ea, NA, f"{what}: {pr.text()}", **kw)
    # no real difference is no evidence against the claim: inconclusive, as for a magnitude
    verdict = REPRO if pr.direction == want else INCONCLUSIVE if pr.direction == "same" else NOT
    return _entry(claim, paper, pr.ea, verdict, f"{what}: {pr.text()}; real only at p < {ALPHA}", **kw)


def claim_verdicts(s: Study) -> list[dict]:
    arch = s.params.table5.arch
    out = [_pair_verdict(s, "abstract:minimax-more-robust-than-alt", "minimax is more robust than alt",
                         s.pair("minimax", f"attnet-curr:{arch}", "alt"), "lower",
                         f"AttNet-curr ({arch}, the paper's measure) at eta {s.eta}")]
    wc = s.pair("minimax", "worst-case", "alt")
    if wc is not None and out[0]["verdict"] != NA:
        out[0]["why"] += f"; under worst-case: {wc.text()}"
    cm = sorted((d for d in s.defenders if d.startswith("adv-fgsm-")), key=lambda d: int(d.split("-")[-1]))
    k = int(cm[-1].split("-")[-1]) if cm else None
    # the cat-and-mouse error alternates between rounds: u_K stands for the paper's u_80 only at its parity
    sens = _pair_verdict(s, "abstract:sens-fgsm-robust-to-fgsm-curr",
                         f"Sens-FGSM is robust to FGSM-curr (FGSM-{PAPER_K + 1}), unlike the cat-and-mouse classifiers",
                         s.pair("sens-fgsm", "fgsm-curr", cm[-1]) if k and same_parity(k) else None, "lower",
                         f"FGSM-curr at eta {s.eta} against the last cat-and-mouse classifier "
                         f"({next_round(k) if k else 'no cat-and-mouse round ran'})")
    kind, _ = q2_explanation(s)
    if sens["verdict"] == REPRO and kind != "not run":
        sens["why"] += (f"; the ablation against `{ABL_CONTROL}` supports "
                        + {"sensitivity": "the sensitivity term as the cause",
                           "masking": "a masked gradient, not robustness",
                           "none": "no effect of the sensitivity term", "mixed": "neither explanation alone"}[kind])
    if (pgd := s.get("sens-fgsm", "pgd-curr")) and sens["verdict"] != NA:
        sens["why"] += f"; under PGD-curr its error is {pgd['error']:.3f}"
    out.append(sens)
    return out


def all_verdicts(s: Study) -> list[dict]:
    """Every claim once: the Table 5 cells (magnitudes), Table 5's pattern, Figure 1's shape and
    the abstract's claims of direction."""
    cells = table5_verdicts(s)
    return cells + [pattern_verdict(s, cells)] + shape_verdicts(s) + claim_verdicts(s)


def _fmt(v) -> str:
    return "n/a" if v is None else v if isinstance(v, str) else f"{v:.3f}"


def section(verdicts: list[dict]) -> str:
    def count(kinds) -> str:
        vs = [e for e in verdicts if e["kind"] in kinds]
        return ", ".join(f"{sum(e['verdict'] == v for e in vs)} {v}" for v in VERDICTS)
    body = [[f"`{e['claim']}`", _fmt(e["paper"]), _fmt(e["ours"]),
             "n/a" if e["ci95"] is None else f"{e['ci95'][0]:+.3f} to {e['ci95'][1]:+.3f}",
             "n/a" if e["margin"] is None else f"{e['margin']:g}", f"**{e['verdict']}**", e["why"]]
            for e in verdicts]
    scopes = sorted({e["scope"] for e in verdicts if e["scope"]})
    rules = {}
    for e in verdicts:  # each distinct rule once, in the order the claims first use it
        if e["rule"] and e["rule"] not in rules.setdefault(e["kind"], []):
            rules[e["kind"]].append(e["rule"])
    return "\n".join([
        f"Magnitudes (Table 5 cells): {count({'magnitude'})}. Patterns (Table 5's ordering, Figure 1's "
        f"shape) and directions (the abstract's claims): {count({'pattern', 'shape', 'direction'})}. "
        "Each claim is judged once.", "",
        *[f"- {k}: {r}" for k, rs in rules.items() for r in rs], "",
        f"Scope: {'; '.join(scopes)}. For a magnitude, `ours` is the mean over the training seeds (the Table 5 "
        "below shows the main run's) and the interval is ours minus the paper's; for the pattern, Spearman's "
        "rho; otherwise the main run's number.", "",
        md_table(["claim", "paper", "ours", "95% interval", "margin", "verdict", "why"], body)])
