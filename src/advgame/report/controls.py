"""The controls behind the answers (docs/protocol.md, section 10): Q2's decomposition of Sens-FGSM's
advantage into one-change steps and gradient masking's signature, and Q3's difference in
differences of the attacker-architecture gaps. Each difference is paired on the same images."""
from __future__ import annotations

from advgame import names
from advgame.evaluation.paired import across_seeds, fmt_p, mask
from advgame.report.study import Study
from advgame.report.tables import md_table

ABL_CONTROL, ABL_SMOOTH, ABL_TAU = names.ablation_name("sens-off"), names.ablation_name("smooth"), "tau-"


def tau_of(s: Study, name: str) -> float:
    """An ablation's tau: from its variant, else from its name (tau-0p001 -> 0.001)."""
    tau = (s.ablations.get(name, {}).get("variant") or {}).get("tau")
    return float(tau) if tau is not None else float(name[len(ABL_TAU):].replace("p", "."))


def paired_effect(s: Study, a: str, b: str, attack: str = "fgsm-curr") -> tuple[float, float, float, int] | None:
    """a's error minus b's under `attack` (each under its own, for FGSM-curr) on the images both
    saw (the shorter's: each is the first n of the test split): (difference, lo, hi, n), a normal
    95% interval from the per-image differences; None without per-image outcomes."""
    ma, mb = mask(s.obj(a), attack, s.eta), mask(s.obj(b), attack, s.eta)
    if ma is None or mb is None:
        return None
    n = min(len(ma), len(mb))
    if n < 2:
        return None
    d = [int(x) - int(y) for x, y in zip(ma[:n], mb[:n])]
    m = sum(d) / n
    half = 1.959964 * (sum((x - m) ** 2 for x in d) / (n - 1) / n) ** 0.5
    return m, m - half, m + half, n


def _across(pr) -> list[str]:
    """A step's columns across training seeds: mean difference, its 95% interval (the seeds'
    spread and the images' paired error), seeds and p (Holm-adjusted inside a question's family);
    the main seed's alone where a side was not run at other seeds."""
    if pr is None or pr.ci_seeds is None:
        return ["main seed only", "", "1", ""]
    p = pr.p_seeds if pr.p_holm is None else pr.p_holm
    return [f"{pr.diff_seeds:+.3f}", f"{pr.ci_seeds[0]:+.3f} to {pr.ci_seeds[1]:+.3f}", str(pr.seeds),
            fmt_p(p) + (" (Holm)" if pr.p_holm is not None else "")]


def q2_decomposition(s: Study, last_round: str | None) -> list[str]:
    """Sens-FGSM's FGSM-curr advantage over the last cat-and-mouse classifier, step by step: the
    online attack (the `sens-off` control: FGSM-AT on Sens-FGSM's schedule, no sensitivity term)
    against the lagged one (u_K, trained against the previous round's FGSM), then the sensitivity
    term, the surrogate and tau; each a paired difference on the same images at the main seed and
    across the training seeds that ran both sides (names.SEEDS)."""
    steps = []
    if last_round and ABL_CONTROL in s.ablations:
        steps.append(("online vs lagged attack", ABL_CONTROL, last_round))
    if ABL_CONTROL in s.ablations:
        steps.append(("the sensitivity term", "sens-fgsm", ABL_CONTROL))
    if ABL_SMOOTH in s.ablations:
        steps.append(("the surrogate: tanh step in the forward pass too", ABL_SMOOTH, "sens-fgsm"))
    for n in sorted((n for n in s.ablations if n.startswith(ABL_TAU)), key=lambda n: tau_of(s, n)):
        steps.append((f"tau {tau_of(s, n):g} instead of {s.params.sens_fgsm.tau:g}", n, "sens-fgsm"))
    body = []
    for what, a, b in steps:
        e = paired_effect(s, a, b)
        if e is not None:
            body.append([what, f"`{a}` - `{b}`", f"{e[0]:+.3f}", f"{e[1]:+.3f} to {e[2]:+.3f}", str(e[3]),
                         *_across(s.pair(a, "fgsm-curr", b))])
    if not body:
        return []
    return ["The advantage decomposed: each step is one change, its effect on the FGSM-curr error (each model "
            "under its own FGSM), paired on the same images: at the main training seed (an interval from the "
            "images alone), and across the training seeds that ran both sides (the mean difference; its interval "
            "adds the seeds' spread to the images' paired error, as the verdicts' do; p of the paired test "
            "across seeds, Holm-adjusted over this answer's tests). An interval that excludes 0 is a real effect:",
            "", md_table(["step", "difference", "main seed", "95% interval (images)", "images",
                          "across seeds", "95% interval (seeds)", "seeds", "p"], body)]


def masking_signature(s: Study) -> str:
    """Gradient masking's signature on Sens-FGSM: a one-step attack that gets weaker as eta grows,
    and iterative or black-box attacks far above it."""
    r = s.defenders.get("sens-fgsm", {}).get("results", {})
    fg = {float(k): c["error"] for k, c in r.get("fgsm-curr", {}).items()}
    if len(fg) < 2:
        return ""
    etas = sorted(fg)
    falls = [f"{a:g} -> {b:g}" for a, b in zip(etas, etas[1:]) if fg[b] < fg[a] - 0.01]
    pgd, square = s.get("sens-fgsm", "pgd-curr"), (s.defenders["sens-fgsm"].get("cascade", {}).get(s.eta, {})
                                                     .get("square"))
    bits = ["FGSM-curr error by eta: " + ", ".join(f"{e:g}: {fg[e]:.3f}" for e in etas)
            + (f" (it falls from eta {', '.join(falls)})" if falls else " (it does not fall as eta grows)")]
    if pgd and s.eta in r.get("fgsm-curr", {}):
        bits.append(f"PGD-curr {pgd['error']:.3f} against FGSM-curr {r['fgsm-curr'][s.eta]['error']:.3f} at eta {s.eta}")
    if square:
        bits.append(f"Square fools {square['new']} of the {square['ran_on']} images the white-box attacks left")
    evidence = bool(falls) or (pgd is not None and s.eta in r.get("fgsm-curr", {})
                               and pgd["error"] - r["fgsm-curr"][s.eta]["error"] > 0.5)
    return ("Gradient masking's signature on Sens-FGSM: " + "; ".join(bits) + ". "
            + ("**Evidence for masking**: its own one-step gradient stops pointing uphill while stronger attacks "
               "still find errors." if evidence else
               "**No evidence for masking** from these numbers."))


GAME = ("alt", "minimax", "maximin")


def _archs(s: Study, d: str, own: str) -> list[str]:
    return [a for a in s.defenders.get(d, {}).get("results", {}) if a.startswith("attnet-curr:") and a != own]


def _arch_gap(s: Study, d: str, own: str) -> tuple[float, float] | None:
    """A defender's architecture gap at the main eta, per image on the same images: the mean
    error under the other attacker architectures minus the error under `own`; (gap, its
    variance). None without the per-image outcomes."""
    obj = s.defenders.get(d, {})
    others = [mask(obj, a, s.eta) for a in _archs(s, d, own)]
    base = mask(obj, own, s.eta)
    if base is None or not others or any(m is None or len(m) != len(base) for m in others):
        return None
    n = len(base)
    diff = [sum(m[i] for m in others) / len(others) - base[i] for i in range(n)]
    mean = sum(diff) / n
    return mean, sum((x - mean) ** 2 for x in diff) / (n - 1) / n if n > 1 else 0.0


def _seed_gaps(s: Study, d: str, own: str) -> dict[int, float] | None:
    """seed -> d's architecture gap from names.SEEDS (its per-seed errors), over the seeds that
    measured every architecture; None where fewer than 2 did."""
    cells = [s.seeds.by_seed(d, a, s.eta) for a in [own, *_archs(s, d, own)]]
    if len(cells) < 2 or any(c is None for c in cells):
        return None
    common = [k for k in cells[0] if all(k in c for c in cells)]
    gaps = {k: sum(c[k] for c in cells[1:]) / (len(cells) - 1) - cells[0][k] for k in common}
    return gaps if len(gaps) >= 2 else None


def _did(gaps: dict, game: list[str], rest: list[str]) -> tuple[float, float]:
    """(difference in differences of the mean gaps, its variance) from per-defender (gap, var)."""
    mg = sum(gaps[d][0] for d in game) / len(game)
    mr = sum(gaps[d][0] for d in rest) / len(rest)
    var = sum(gaps[d][1] for d in game) / len(game) ** 2 + sum(gaps[d][1] for d in rest) / len(rest) ** 2
    return mg - mr, var


def _did_word(lo: float, hi: float) -> str:
    return ("the game defenses lose more to the other architectures than the other defenses do" if lo > 0 else
            "the game defenses lose less to the other architectures than the other defenses do" if hi < 0 else
            "no difference shown between the game defenses' architecture gap and the others'")


def _did_across_seeds(s: Study, gaps: dict, own: str) -> str:
    """The difference in differences at every training seed that measured all architectures of
    the defenders it compares (names.SEEDS), its mean and a t interval over those seeds that adds
    the main seed's image variance of the same difference."""
    per = {d: g for d in gaps if (g := _seed_gaps(s, d, own))}
    game, rest = [d for d in per if d in GAME], [d for d in per if d not in GAME]
    if not game or not rest:
        return ""
    seeds = sorted(set.intersection(*(set(per[d]) for d in per)))
    if len(seeds) < 2:
        return ""
    did = [sum(per[d][k] for d in game) / len(game) - sum(per[d][k] for d in rest) / len(rest) for k in seeds]
    e = across_seeds(did, _did(gaps, game, rest)[1])
    lo, hi = e.interval()
    return (f" Across {e.k} training seeds ({', '.join(map(str, seeds))}; the defenders run at each: "
            f"{', '.join(f'`{d}`' for d in [*game, *rest])}), the difference is {e.mean:+.3f} on average, 95% "
            f"interval {lo:+.3f} to {hi:+.3f} (the seeds' spread and the main seed's images), p = {fmt_p(e.p)}: "
            f"**{_did_word(lo, hi)}**.")


def architecture_did(s: Study) -> str:
    """Q3's control: do the game defenses (trained against one attacker architecture) lose more to
    the other architectures than the other defenses do? A difference in differences of the
    architecture gaps: at the main seed with a normal 95% interval from the per-image variances,
    and across the training seeds that measured it."""
    own = f"attnet-curr:{s.params.game.attacker_arch}"
    gaps = {d: g for d in s.defenders if (g := _arch_gap(s, d, own))}
    game = [d for d in gaps if d in GAME]
    rest = [d for d in gaps if d not in GAME]
    if not game or not rest:
        return ""
    did, var = _did(gaps, game, rest)
    mg = sum(gaps[d][0] for d in game) / len(game)
    mr = sum(gaps[d][0] for d in rest) / len(rest)
    half = 1.959964 * var ** 0.5
    lo, hi = did - half, did + half
    listed = ", ".join(f"`{d}` {gaps[d][0]:+.3f}" for d in [*game, *rest])
    return (f"Control (difference in differences): the architecture gap, the mean AttNet-curr error of the other "
            f"architectures minus `{own}`'s on the same images, is {mg:+.3f} on average for the game defenses and "
            f"{mr:+.3f} for the others ({listed}); difference {did:+.3f}, 95% interval {lo:+.3f} to {hi:+.3f} "
            f"(images only, the main training seed): **{_did_word(lo, hi)}**." + _did_across_seeds(s, gaps, own))
