"""The answers and verdicts follow the evidence: McNemar's exact test against known values, and
results in which a pattern reverses (Sens-FGSM above the cat-and-mouse classifier, the
sensitivity-off control equal to Sens-FGSM, a p-value above 0.05, a seed that disagrees) change
the answer and the verdict with them."""
import json
import math
import re
import statistics

import pytest
from scipy import stats

from advgame import config, masks
from advgame.evaluation import paired
from advgame.report import answers, controls, verdicts
from advgame.report import audit as review
from advgame.report import render as report
from advgame.report.study import Study

N = 200
PARAMS = {"study": {"defenders": ["baseline", "catmouse", "fgsm-at", "sens-fgsm", "alt", "minimax", "pgd-at",
                                  "magnet"]},
          "attack": {"eta": 0.3}, "eval": {"etas": [0.2, 0.3]}, "catmouse": {"rounds": 4, "matrix_rounds": [0, 4]}}


def cell(err: float, n: int = N) -> dict:
    half = 1.96 * (max(err * (1 - err), 0.01) / n) ** 0.5
    return {"error": err, "ci95": [max(0.0, err - half), min(1.0, err + half)], "n": n}


def obj(name: str, errs: dict, per_image: bool = True, sanity: dict | None = None) -> dict:
    """errs: {attack: {eta: error}}; the first round(error * N) images are the errors, so two
    cells differ on exactly |k_a - k_b| images, all one way."""
    out = {"defender": name, "results": {a: {e: cell(v) for e, v in by.items()} for a, by in errs.items()},
           "sanity": sanity or {"pgd_ge_fgsm": True}}
    if per_image:
        out["per_image"] = {a: {e: masks.pack([i < round(v * N) for i in range(N)]) for e, v in by.items()}
                            for a, by in errs.items()}
    return out


def study(defs: dict, ablations: dict | None = None, seeds: dict | None = None, curve=None, **kw) -> Study:
    p = config.parse(PARAMS)
    s = Study(p, defs, catmouse=curve or [], ablations=ablations or {}, seeds=paired.SeedTable(seeds),
              catmouse_n=kw.get("catmouse_n", N), meta={"test": {"shape": [1000]}})
    return s


def at(v: float) -> dict:
    return {"0.3": v}


def base_defs(sens_fgsm=0.05, cm_fgsm=0.60, sens_transfer=0.60, per_image=True, sens_pgd=0.99) -> dict:
    return {"adv-fgsm-4": obj("adv-fgsm-4", {"fgsm-curr": at(cm_fgsm), "pgd-transfer:baseline": at(0.62),
                                             "worst-case": at(0.99)}, per_image),
            "sens-fgsm": obj("sens-fgsm", {"fgsm-curr": at(sens_fgsm), "pgd-curr": at(sens_pgd),
                                           "pgd-transfer:baseline": at(sens_transfer), "fgsm-1": at(sens_transfer),
                                           "worst-case": at(0.99)}, per_image)}


def control(fgsm_curr=0.30, transfer=0.60) -> dict:
    return {"sens-off": {"name": "sens-off", "variant": {"sensitivity": False}, "eta": 0.3,
                                  **obj("sens-off", {"fgsm-curr": at(fgsm_curr), "pgd-curr": at(0.99),
                                                              "pgd-transfer:baseline": at(transfer),
                                                              "fgsm-1": at(transfer)})}}


def claim(s: Study, name: str) -> dict:
    return next(v for v in verdicts.all_verdicts(s) if v["claim"] == name)


def test_mcnemar_known_values():
    assert paired.mcnemar(0, 10) == pytest.approx(2 * 0.5 ** 10)
    assert paired.mcnemar(10, 0) == paired.mcnemar(0, 10)
    assert paired.mcnemar(0, 0) == 1.0 and paired.mcnemar(5, 5) == 1.0
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10
    assert paired.mcnemar(1, 9) == pytest.approx(2 * 11 / 1024)
    assert paired.mcnemar(3, 5) == pytest.approx(min(1.0, 2 * (1 + 8 + 28 + 56) / 256))


def test_paired_compare_counts_discordant_images():
    a = {"results": {"x": {"0.3": {"error": 0.5, "n": 4}}}, "per_image": {"x": {"0.3": masks.pack([1, 1, 0, 0])}}}
    b = {"results": {"x": {"0.3": {"error": 0.5, "n": 4}}}, "per_image": {"x": {"0.3": masks.pack([1, 0, 1, 0])}}}
    pr = paired.compare(a, "x", b, "x", "0.3", "a", "b")
    assert (pr.a_only, pr.b_only, pr.p) == (1, 1, 1.0) and not pr.real
    del b["per_image"]
    pr = paired.compare(a, "x", b, "x", "0.3", "a", "b")
    assert pr.p is None and "no paired test: per-image outcomes missing" in pr.text()


def test_q2_and_claim_follow_sens_fgsm_against_the_catmouse_classifier():
    wins = study(base_defs(sens_fgsm=0.05, cm_fgsm=0.60))
    assert "Sens-FGSM is lower than `adv-fgsm-4`" in answers.q2(wins)
    assert "1 of 1 training seed" in answers.q2(wins) and "McNemar p = " in answers.q2(wins)
    assert claim(wins, "abstract:sens-fgsm-robust-to-fgsm-curr")["verdict"] == "reproduced"
    # u_K stands for the paper's u_80 only at 80's parity: with K = 3 the claim is not comparable
    odd = study({("adv-fgsm-3" if d.startswith("adv-fgsm-") else d): o for d, o in base_defs().items()})
    sens = claim(odd, "abstract:sens-fgsm-robust-to-fgsm-curr")
    assert sens["verdict"] == "not comparable" and "FGSM-4 on u_3 here" in sens["why"] and "other parity" in sens["why"]
    assert "FGSM-5 on u_4 here, the paper's FGSM-81 on u_80: the same parity" in answers.q2(wins)
    above = study(base_defs(sens_fgsm=0.70, cm_fgsm=0.60))  # the pattern reverses
    assert "Sens-FGSM is higher than `adv-fgsm-4`" in answers.q2(above)
    assert claim(above, "abstract:sens-fgsm-robust-to-fgsm-curr")["verdict"] == "not reproduced"


def test_a_p_value_above_005_is_not_a_difference():
    close = study(base_defs(sens_fgsm=0.58, cm_fgsm=0.60))  # 4 images apart: p = 0.125
    text = answers.q2(close)
    assert "not shown to differ from `adv-fgsm-4`" in text and "p = 0.125" in text
    # no evidence either way: inconclusive (not reproduced needs a real difference the other way)
    assert claim(close, "abstract:sens-fgsm-robust-to-fgsm-curr")["verdict"] == "inconclusive"


def test_a_training_seed_that_disagrees_blocks_the_difference():
    seeds = {"seeds": [0, 1, 2], "defenders": {
        "sens-fgsm": {"fgsm-curr": {"0.3": {"per_seed": [0.05, 0.06, 0.70]}}},
        "adv-fgsm-4": {"fgsm-curr": {"0.3": {"per_seed": [0.60, 0.61, 0.60]}}}}}
    s = study(base_defs(), seeds=seeds)
    pr = s.pair("sens-fgsm", "fgsm-curr", "adv-fgsm-4")
    assert pr.p < 0.05 and (pr.seeds_agree, pr.seeds) == (2, 3) and not pr.real
    assert "2 of 3 training seeds agree" in answers.q2(s)
    assert claim(s, "abstract:sens-fgsm-robust-to-fgsm-curr")["verdict"] == "inconclusive"


def test_q2_explanation_follows_the_ablation():
    masked = study(base_defs(sens_transfer=0.60), control(fgsm_curr=0.30, transfer=0.60))
    kind, _ = answers.q2_explanation(masked)
    assert kind == "masking" and "a masked gradient" in answers.q2(masked)
    robust = study(base_defs(sens_transfer=0.20, sens_pgd=0.5), control(fgsm_curr=0.30, transfer=0.60))
    mixed = study(base_defs(sens_transfer=0.20), control(fgsm_curr=0.30, transfer=0.60))  # PGD-curr no better
    assert answers.q2_explanation(mixed)[0] == "mixed"
    assert answers.q2_explanation(robust)[0] == "sensitivity"
    assert "support the sensitivity term as the cause" in answers.q2(robust)
    equal = study(base_defs(sens_fgsm=0.05), control(fgsm_curr=0.05))  # the control equals Sens-FGSM
    assert answers.q2_explanation(equal)[0] == "none"
    assert "no measurable effect" in answers.q2(equal)
    assert "The ablation did not run" in answers.q2(study(base_defs()))
    why = claim(masked, "abstract:sens-fgsm-robust-to-fgsm-curr")["why"]
    assert "a masked gradient" in why and "0.990" in why
    for s in (masked, robust, equal):  # no fixed explanatory prose
        assert "each cat-and-mouse round" not in answers.q2(s)


def test_missing_per_image_outcomes_do_not_crash_and_say_so():
    s = study(base_defs(per_image=False), control())
    text = answers.q2(s)
    assert "no paired test: per-image outcomes missing" in text
    assert claim(s, "abstract:sens-fgsm-robust-to-fgsm-curr")["verdict"] == "not comparable"


def test_table5_verdicts_one_per_cell():
    defs = {"minimax": obj("minimax", {"fgsm-curr": at(0.22), "attnet-curr:mlp": at(0.40)})}
    s = study(defs)
    s.table5 = {"minimax": {"fgsm-curr": {"0.4": cell(0.90)}}}
    vs = verdicts.table5_verdicts(s)
    assert len(vs) == 3 * 4 * 2 and len({v["claim"] for v in vs}) == 24
    by = {v["claim"]: v for v in vs}
    # 0.22 on 200 images: ours - paper within about -0.055..+0.06, wider than +-0.05: underpowered
    assert by["table5:minimax:fgsm-curr:0.3"]["verdict"] == "inconclusive"
    assert by["table5:minimax:attnet-curr:0.3"]["verdict"] == "not reproduced"  # 0.40 vs 0.020: +0.35 or more
    assert by["table5:minimax:fgsm-curr:0.4"]["verdict"] == "not reproduced"
    assert by["table5:minimax:attnet-curr:0.5"]["verdict"] == "not comparable"
    assert by["table5:alt:fgsm-curr:0.3"]["why"] == "alt is not in this study"
    v = by["table5:minimax:fgsm-curr:0.3"]
    assert {"claim", "kind", "paper", "ours", "ci95", "verdict", "rule", "margin", "scope", "seeds", "why"} == set(v)
    assert v["margin"] == 0.05 and by["table5:minimax:attnet-curr:0.3"]["margin"] == 0.10 and v["seeds"] == 1
    assert "K = " in v["scope"] and "equivalence" in v["rule"]


def test_table5_attnet_cells_are_judged_by_the_papers_own_attacker_where_it_ran():
    # like with like: the table5 stage's attnet-paper:<arch> (tanh, cross-entropy, no warm start),
    # not the study's stronger attnet-curr, wherever it has the cell; the FGSM cells are unchanged
    defs = {"minimax": obj("minimax", {"fgsm-curr": at(0.22), "attnet-curr:mlp": at(0.40)})}
    s = study(defs)
    s.table5 = {"minimax": {"attnet-paper:mlp": {"0.3": cell(0.02), "0.4": cell(0.55)}}}
    by = {v["claim"]: v for v in verdicts.table5_verdicts(s)}
    assert by["table5:minimax:attnet-curr:0.3"]["ours"] == 0.02  # not the study attacker's 0.40
    assert "`attnet-paper:mlp`" in by["table5:minimax:attnet-curr:0.3"]["why"]
    assert by["table5:minimax:attnet-curr:0.4"]["ours"] == 0.55
    assert by["table5:minimax:attnet-curr:0.5"]["verdict"] == "not comparable"  # neither attacker ran there
    assert by["table5:minimax:fgsm-curr:0.3"]["ours"] == 0.22
    assert "`fgsm-curr`" in by["table5:minimax:fgsm-curr:0.3"]["why"]
    s.table5 = {}
    assert verdicts.table5_verdicts(s)[1]["ours"] == 0.40  # without the stage: the study's attacker


def test_equivalence_rule_on_constructed_cases():
    def eq(mean, se, paper, margin, df=math.inf):
        return verdicts.equivalence(verdicts.SeedMean(mean, se, df), paper, margin)
    assert eq(0.31, 0.01, 0.3, 0.05) == "reproduced"            # equivalent
    assert eq(0.45, 0.02, 0.3, 0.05) == "not reproduced"        # different
    assert eq(0.30, 0.05, 0.3, 0.05, df=2) == "inconclusive"    # underpowered: wider than the margin
    assert eq(0.36, 0.01, 0.3, 0.05) == "inconclusive"          # straddles the margin
    # at a bound: the paper's 1.000 cannot be exceeded, only the side below is tested
    assert eq(0.97, 0.01, 1.0, 0.10) == "reproduced"
    assert eq(0.75, 0.02, 1.0, 0.10) == "not reproduced"
    assert eq(0.90, 0.03, 1.0, 0.10) == "inconclusive"
    assert eq(0.01, 0.01, 0.0, 0.05) == "reproduced"
    assert verdicts.tost(verdicts.SeedMean(0.97, 0.01, math.inf), 1.0, 0.1)[1] is None


def test_tost_is_statsmodels_two_one_sided_t_tests():
    from statsmodels.stats.weightstats import DescrStatsW
    vals, paper, margin = [0.27, 0.31, 0.29, 0.33, 0.30], 0.30, 0.05
    _, (_, p_low, _), (_, p_upp, _) = DescrStatsW(vals).ttost_mean(paper - margin, paper + margin)
    k = len(vals)
    est = verdicts.SeedMean(statistics.fmean(vals), statistics.stdev(vals) / k ** 0.5, k - 1)
    assert verdicts.tost(est, paper, margin) == pytest.approx((p_low, p_upp), rel=1e-9)


def test_seed_interval_adds_the_seed_spread_to_the_images_error():
    m, lo, hi = verdicts.seed_interval([0.30], 1000)  # one seed: the test images alone
    assert m == 0.30 and hi - lo == pytest.approx(2 * 1.96 * (0.3 * 0.7 / 1000) ** 0.5, rel=1e-3)
    m3, lo3, hi3 = verdicts.seed_interval([0.25, 0.30, 0.35], 1000)
    seed_var, image_var = 0.05 ** 2 / 3, 0.3 * 0.7 / 1000
    df = (seed_var + image_var) ** 2 / (seed_var ** 2 / 2)   # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * (seed_var + image_var) ** 0.5
    assert m3 == pytest.approx(0.30) and (lo3, hi3) == pytest.approx((0.30 - half, 0.30 + half), abs=1e-6)
    assert 2 < df < 4 and hi3 - lo3 > hi - lo  # the image part adds degrees of freedom to the seeds' 2
    # seeds that agree, on the same images: no narrower than the images allow
    _, lo_same, hi_same = verdicts.seed_interval([0.3, 0.3, 0.3], 1000)
    assert (lo_same, hi_same) == pytest.approx((lo, hi))


def test_seed_level_verdicts_read_the_seed_table():
    defs = {"minimax": obj("minimax", {"fgsm-curr": at(0.22), "attnet-curr:mlp": at(0.05)})}
    spread = {"seeds": [0, 1, 2], "defenders": {"minimax": {"fgsm-curr": {"0.3": {"per_seed": [0.22, 0.35, 0.10]}},
                                                            "attnet-curr:mlp": {"0.3": {"per_seed": [0.05, 0.04, 0.03]}}}}}
    by = {v["claim"]: v for v in verdicts.table5_verdicts(study(defs, seeds=spread))}
    assert by["table5:minimax:fgsm-curr:0.3"]["verdict"] == "inconclusive"  # the seeds disagree: underpowered
    assert by["table5:minimax:fgsm-curr:0.3"]["seeds"] == 3
    assert by["table5:minimax:attnet-curr:0.3"]["verdict"] == "reproduced"  # 0.04 +- small vs 0.020, margin 0.10
    # recomputed by hand from the seed table: mean 0.2233, interval as seed_interval
    m, lo, hi = verdicts.seed_interval([0.22, 0.35, 0.10], N)
    assert by["table5:minimax:fgsm-curr:0.3"]["ci95"] == [round(lo - 0.218, 4), round(hi - 0.218, 4)]


def test_pattern_verdict_by_rank_agreement():
    def s(f):
        return study({d: obj(d, {"fgsm-curr": at(round(f(p[0]), 3)), "attnet-curr:mlp": at(round(f(p[1]), 3))})
                      for d, p in (("minimax", (0.218, 0.020)), ("alt", (0.244, 0.104)),
                                   ("sens-fgsm", (0.048, 0.965)))})
    same = s(lambda v: v ** 0.5)  # magnitudes off, the ordering kept
    cells = verdicts.table5_verdicts(same)
    pat = verdicts.pattern_verdict(same, cells)
    assert pat["kind"] == "pattern" and pat["ours"] == pytest.approx(1.0) and "15 of 15 pairwise" in pat["why"]
    assert all(v["verdict"] == "not reproduced" for v in cells if v["claim"].endswith("fgsm-curr:0.3"))
    assert pat["verdict"] in ("reproduced", "inconclusive") and "6 cells" in pat["why"]
    reverse = s(lambda v: 1 - v)
    pat = verdicts.pattern_verdict(reverse, verdicts.table5_verdicts(reverse))
    assert pat["ours"] == pytest.approx(-1.0) and pat["verdict"] == "not reproduced"
    assert verdicts.pattern_verdict(study({}), [])["verdict"] == "not comparable"


def test_fig1_shape_verdict_follows_the_curve():
    swing = [{"k": k, "next_attack": v} for k, v in enumerate([0.9, 0.4, 0.8, 0.3, 0.7, 0.35], 1)]
    flat = [{"k": k, "next_attack": v} for k, v in enumerate([0.9, 0.6, 0.5, 0.45, 0.45, 0.45], 1)]
    assert verdicts.shape_verdicts(study({}, curve=swing))[0]["verdict"] == "reproduced"
    settled = verdicts.shape_verdicts(study({}, curve=flat))
    assert [v["verdict"] for v in settled] == ["not reproduced"]  # one claim: Figure 1 is the abstract's
    assert verdicts.shape_verdicts(study({}, curve=swing, catmouse_n=0))[0]["verdict"] == "not comparable"


def test_minimax_claim_follows_the_paired_test():
    def s(mm, alt):
        return study({"minimax": obj("minimax", {"attnet-curr:mlp": at(mm), "worst-case": at(0.9)}),
                      "alt": obj("alt", {"attnet-curr:mlp": at(alt), "worst-case": at(0.9)})})
    assert claim(s(0.10, 0.30), "abstract:minimax-more-robust-than-alt")["verdict"] == "reproduced"
    assert claim(s(0.10, 0.30), "abstract:minimax-more-robust-than-alt")["kind"] == "direction"
    assert claim(s(0.36, 0.28), "abstract:minimax-more-robust-than-alt")["verdict"] == "not reproduced"
    assert claim(s(0.29, 0.30), "abstract:minimax-more-robust-than-alt")["verdict"] == "inconclusive"


def magnet_defs(adaptive: float, sanity_ok: bool) -> dict:
    m = obj("magnet", {"clean": {"0": 0.04}, "pgd-curr": at(0.20), "pgd-adaptive": at(adaptive),
                       "worst-case": at(max(adaptive, 0.2))},
            sanity={"error_grows_to_one": sanity_ok, "pgd_ge_fgsm": True})
    m["detector"] = {"clean_rejection": cell(0.01), "by_attack": {"pgd-adaptive": {"0.3": {
        "detected": cell(0.15), "fooled_undetected": cell(adaptive), "rejected_or_wrong": cell(0.9)}}}}
    return {"magnet": m, "pgd-at": obj("pgd-at", {"worst-case": at(0.24), "pgd-curr": at(0.2)}),
            "sens-fgsm": obj("sens-fgsm", {"worst-case": at(0.99), "pgd-curr": at(0.99)})}


def test_magnet_is_ranked_by_its_adaptive_worst_case_and_never_holds_with_failing_checks():
    s = study(magnet_defs(0.85, sanity_ok=False))
    q1 = answers.q1(s)
    assert q1.index("`pgd-at` worst-case 0.240") < q1.index("`magnet` worst-case 0.850")
    assert "sanity checks fail: `error_grows_to_one`" in q1
    line = next(l for l in answers.q3(s).splitlines() if l.startswith("- `magnet`"))
    assert "pgd-adaptive 0.850" in line and "holds**" not in line
    weak = study(magnet_defs(0.30, sanity_ok=False))
    line = next(l for l in answers.q3(weak).splitlines() if l.startswith("- `magnet`"))
    assert "not shown to hold" in line
    good = study(magnet_defs(0.30, sanity_ok=True))
    assert "**holds**" in next(l for l in answers.q3(good).splitlines() if l.startswith("- `magnet`"))
    sec = review.magnet(s)
    assert "0.010" in sec and "| pgd-adaptive | 0.3 | 0.150 | 0.850 | 0.900 | 0.850 |" in sec


def test_under_20_names_who_meets_the_bar_and_labels_non_main_etas():
    s = study({"pgd-at": obj("pgd-at", {"worst-case": {"0.2": 0.08, "0.3": 0.24}}),
               "sens-fgsm": obj("sens-fgsm", {"worst-case": {"0.2": 0.7, "0.3": 0.99}})})
    text = review.under_20(s)
    assert "`pgd-at` at eta 0.2" in text and "`sens-fgsm` at" not in text
    assert "worst-case 0.2 (FGSM/PGD/AttNet only)" in text and "| worst-case 0.3 |" in text
    assert "none, at any eta" in review.under_20(study({"x": obj("x", {"worst-case": at(0.5)})}))


def test_report_writes_verdicts_and_names_models(tmp_path):
    from test_report import make_study  # the full fixture study of test_report.py

    p = make_study(tmp_path, models=False)
    out = report.build_report(p, tmp_path, examples=False)
    res = json.loads(out["results"].read_text())
    md = out["report"].read_text()
    claims = [v["claim"] for v in res["verdicts"]]
    assert len([c for c in claims if re.fullmatch(r"table5:[a-z-]+:[a-z-]+:0\.\d", c)]) == 24
    assert {"fig1:shape", "table5:pattern", "abstract:minimax-more-robust-than-alt",
            "abstract:sens-fgsm-robust-to-fgsm-curr"} <= set(claims)
    assert len(claims) == len(set(claims))  # each claim once
    assert "## 4. Does the paper hold?" in md and "`table5:minimax:fgsm-curr:0.3`" in md
    assert "| `minimax` | `advgame-minimax` | `study` |" in md
    assert "(all 1000 test images)" in md and "to convergence'" not in md
    assert "attack start seed(s) [0]" in md


def test_an_unsaturated_cascade_puts_the_worst_case_in_doubt():
    def s(saturated):
        return study({"pgd-at": obj("pgd-at", {"worst-case": at(0.3)}, sanity={"saturated": saturated}),
                      "sens-fgsm": obj("sens-fgsm", {"worst-case": at(0.99)})})
    assert "sanity checks fail" not in answers.q1(s(True))
    assert "sanity checks fail: `saturated`" in answers.q1(s(False))


def test_the_ablations_are_found_under_the_names_their_stages_write(tmp_path):
    # the report keys ablations by file name: the answers must look them up by the same names
    import json

    from advgame import config, names
    from advgame.report.study import load_study

    p = config.parse({"attack": {"eta": 0.3}, "ablation": {"variants": ["sens-off"], "taus": [0.001]}})
    ev = tmp_path / names.run_path(names.eval_path("sens-fgsm"))
    ev.parent.mkdir(parents=True)
    ev.write_text(json.dumps(base_defs()["sens-fgsm"]))
    ctl = control()["sens-off"]
    tau = {**ctl, "name": "tau-0p001", "variant": {"sensitivity": True, "tau": 0.001}}
    for name, o in ((names.ablation_name("sens-off"), ctl), (names.ablation_name("tau", 0.001), tau)):
        f = tmp_path / names.run_path(names.ablation_path(name))
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(o))
    s = load_study(p, tmp_path)
    kind, lines = answers.q2_explanation(s)
    assert kind != "not run", lines
    assert any("tau 0.001" in line for line in lines)


def test_an_ablation_run_at_one_seed_is_judged_by_that_seed_and_says_so():
    runs = {"sens-fgsm": {"fgsm-curr": {"0.3": {"per_seed": [0.05, 0.06]}},
                          "pgd-transfer:baseline": {"0.3": {"per_seed": [0.6, 0.6]}},
                          "fgsm-1": {"0.3": {"per_seed": [0.6, 0.6]}}, "pgd-curr": {"0.3": {"per_seed": [0.99, 0.99]}}}}
    s = study(base_defs(sens_transfer=0.60), control(fgsm_curr=0.30, transfer=0.60),
              seeds={"seeds": [0, 1], "defenders": runs})
    kind, lines = answers.q2_explanation(s)
    assert kind == "masking"  # not "none": the control has no second seed to disagree with
    assert any("main training seed only" in line for line in lines)


def test_q1_ranks_a_difference_only_when_every_seed_holds_it():
    # pgd-at < trades by 40 images, trades < magnet by 4 images (p > 0.05): magnet shares trades' rank
    defs = {d: obj(d, {"worst-case": at(v)}) for d, v in
            (("pgd-at", 0.20), ("trades", 0.40), ("magnet", 0.42), ("sens-fgsm", 0.99))}
    text = answers.q1(study(defs))
    lines = [l for l in text.splitlines() if l[:1].isdigit()]
    assert [l.split(" ", 2)[:2] for l in lines] == [["1.", "`pgd-at`"], ["2.", "`trades`"], ["2.", "`magnet`"],
                                                    ["4.", "`sens-fgsm`"]]
    assert "not shown to differ from the one above: `trades` 0.400 vs `magnet` 0.420" in lines[2]
    # a main-seed difference that another training seed reverses is a tie too, and the mean is quoted
    defs["magnet"] = obj("magnet", {"worst-case": at(0.60)})
    per = {"pgd-at": [0.20, 0.21, 0.19], "trades": [0.40, 0.42, 0.41], "magnet": [0.60, 0.38, 0.61],
           "sens-fgsm": [0.99, 0.99, 0.99]}
    seeds = {"seeds": [0, 1, 2], "defenders": {d: {"worst-case": {"0.3": {"per_seed": v}}} for d, v in per.items()}}
    lines = [l for l in answers.q1(study(defs, seeds=seeds)).splitlines() if l[:1].isdigit()]
    assert lines[1].startswith("2. `trades`")  # -0.21 at every seed: real across the seeds
    _, lo, hi = verdicts.seed_interval([0.60, 0.38, 0.61], N)  # the seed-level interval, as the verdicts'
    assert lines[2].startswith(f"2. `magnet` worst-case 0.600 (mean over 3 training seeds 0.530, 95% interval "
                               f"{lo:.3f}-{hi:.3f})") and lo < 0.40 < 0.60 < hi
    assert "2 of 3 training seeds agree" in lines[2] and "across 3 training seeds: mean difference -0.120" in lines[2]
    # a difference of the same sign at every seed but a wide spread is not real across 3 seeds either
    seeds["defenders"]["trades"]["worst-case"]["0.3"]["per_seed"] = [0.40, 0.70, 0.41]
    lines = [l for l in answers.q1(study(defs, seeds=seeds)).splitlines() if l[:1].isdigit()]
    assert lines[1].startswith("1. `trades`") and "3 of 3 training seeds agree" in lines[1]
    single = [l for l in answers.q1(study(defs)).splitlines() if l[:1].isdigit()]
    assert single[2].startswith("3. `magnet`") and "not shown to differ" not in single[2]


def test_holm_adjusts_within_a_family():
    adj = paired.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})
    assert paired.holm({}) == {}


def test_a_question_decides_on_holm_adjusted_p_values():
    # three comparisons with 0.10 vs 0.15 on 200 images: 10 discordant images, p = 0.002 each on its own
    defs = {d: obj(d, {"pgd-curr": at(e)}) for d, e in (("a", 0.10), ("b", 0.15), ("c", 0.15), ("d", 0.15))}
    s = study(defs)

    def answer(st):
        return [st.pair("a", "pgd-curr", x) for x in ("b", "c", "d")]
    alone = answer(s)
    assert all(pr.real and pr.p_holm is None for pr in alone)
    fam = s.family(answer)
    assert all(pr.family == 3 and pr.p_holm == pytest.approx(3 * pr.p) for pr in fam)
    assert "Holm-adjusted" in fam[0].text() and "over 3 tests" in fam[0].text()
    # a family large enough turns a lone p < 0.05 into no real difference
    defs.update({f"x{i}": obj(f"x{i}", {"pgd-curr": at(0.15)}) for i in range(30)})
    big = study(defs)
    res = big.family(lambda st: [st.pair("a", "pgd-curr", x) for x in defs if x != "a"])
    assert not res[0].real and res[0].p < 0.05 and res[0].p_holm >= 0.05
    assert big._tests is None and big._holm == {}  # the family's state does not leak


def test_an_uncalled_difference_says_which_way_every_seed_goes():
    # sens-fgsm 0.979 vs pgd-at 0.139: 840 vs 0 discordant at the main seed, both seeds the same way,
    # the test across 2 seeds not below 0.05 after Holm: no difference shown, though higher at each
    few = paired.Paired("sens-fgsm", "pgd-at", 0.979, 0.139, n=1000, a_only=840, b_only=0, p=1e-250, seeds=2,
                        seeds_agree=2, p_seeds=0.017, diff_seeds=0.803, p_holm=0.202, family=18)
    assert not few.real and few.direction == "same" and answers.leaning(few) == "higher"
    text = answers._said(few, "lower than `pgd-at`", "higher than `pgd-at`", "no difference shown from `pgd-at`")
    assert text.startswith("no difference shown from `pgd-at`, though higher at each of its 2 training seeds")
    # the seeds disagree, the difference is called, or there is one seed: nothing to add
    split = paired.Paired("a", "b", 0.8, 0.7, n=1000, a_only=150, b_only=50, p=1e-12, seeds=2, seeds_agree=1,
                          p_seeds=0.4, p_holm=1.0)
    called = paired.Paired("a", "b", 0.1, 0.7, n=1000, a_only=0, b_only=600, p=1e-100, seeds=2, seeds_agree=2,
                           p_seeds=1e-5)
    alone = paired.Paired("a", "b", 0.8, 0.7, n=1000, a_only=30, b_only=20, p=0.2)
    assert (answers.leaning(split), answers.leaning(alone)) == (None, None) and called.real and answers.leaning(called) is None
    assert answers.unshown(split, "no difference shown") == "no difference shown"


def test_q3_architecture_control_is_a_difference_in_differences():
    def d(name, own, other):
        return obj(name, {"attnet-curr:mlp": at(own), "attnet-curr:conv": at(other), "worst-case": at(0.99)})
    s = study({"minimax": d("minimax", 0.10, 0.40), "alt": d("alt", 0.10, 0.30),
               "pgd-at": d("pgd-at", 0.10, 0.12), "trades": d("trades", 0.10, 0.14)})
    text = controls.architecture_did(s)
    # gaps +0.30, +0.20 (game) and +0.02, +0.04 (others): 0.25 - 0.03 = +0.22
    assert "+0.250 on average for the game defenses and +0.030 for the others" in text
    assert "difference +0.220" in text and "**the game defenses lose more" in text
    same = study({"minimax": d("minimax", 0.10, 0.13), "pgd-at": d("pgd-at", 0.10, 0.13)})
    assert "**no difference shown" in controls.architecture_did(same)
    assert controls.architecture_did(study({"pgd-at": d("pgd-at", 0.1, 0.2)})) == ""
    assert "Control (difference in differences)" in answers.q3(s)


def test_q2_decomposition_and_masking_signature():
    defs = base_defs(sens_fgsm=0.05, cm_fgsm=0.60)
    defs["sens-fgsm"]["results"]["fgsm-curr"]["0.1"] = cell(0.30)  # falls as eta grows
    s = study(defs, ablations=control(fgsm_curr=0.30))
    lines = controls.q2_decomposition(s, "adv-fgsm-4")
    table = "\n".join(lines)
    assert "| online vs lagged attack | `sens-off` - `adv-fgsm-4` | -0.300 |" in table
    assert "| the sensitivity term | `sens-fgsm` - `sens-off` | -0.250 |" in table
    e = controls.paired_effect(s, "sens-fgsm", "sens-off")
    assert e[1] < e[0] < e[2] < 0 and e[3] == N
    sig = controls.masking_signature(s)
    assert "it falls from eta 0.1 -> 0.3" in sig and "**Evidence for masking**" in sig
    assert "The advantage decomposed" in answers.q2(s)
    assert controls.q2_decomposition(study(base_defs()), "adv-fgsm-4") == []  # no ablation: no table


def test_the_paired_test_across_seeds_is_a_paired_t_test_plus_the_images_error():
    a, b = {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.55}, {0: 0.3, 1: 0.3, 2: 0.35, 3: 0.4, 9: 0.1}  # seed 9: b only
    m, p, k = paired.seed_test(a, b)  # no image error: the paired t-test over the 4 common seeds
    ref = stats.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)])
    assert k == 4 and m == pytest.approx(0.25) and p == pytest.approx(ref.pvalue)
    # the same difference at every seed: only the images' paired error is left (a z-test)
    n, a_only, b_only = 200, 30, 10
    m, p, k = paired.seed_test({0: 0.4, 1: 0.5}, {0: 0.3, 1: 0.4}, n, a_only, b_only)
    var = ((a_only + b_only) / n - ((a_only - b_only) / n) ** 2) / n
    assert p == pytest.approx(2 * stats.norm.sf(0.1 / math.sqrt(var)))
    # both variances: Welch-Satterthwaite between the two (k - 1 < df < infinity)
    d, img = [0.1, 0.2, 0.15], var
    m, p, k = paired.seed_test({0: 0.6, 1: 0.7, 2: 0.65}, {0: 0.5, 1: 0.5, 2: 0.5}, n, a_only, b_only)
    sv = statistics.variance(d) / 3
    df = (sv + img) ** 2 / (sv ** 2 / 2)
    assert 2 < df and p == pytest.approx(2 * stats.t.sf(0.15 / math.sqrt(sv + img), df))
    assert paired.seed_test({0: 0.5}, {0: 0.3, 1: 0.2}) is None  # one common seed: no test across seeds


def test_q2_decomposition_reads_every_training_seed_and_holm():
    # seeds 0-2: the online-vs-lagged step is -0.30, -0.20, -0.25; the sensitivity term -0.25, +0.20, 0.0
    defs = base_defs(sens_fgsm=0.05, cm_fgsm=0.60)
    runs = {"adv-fgsm-4": {"fgsm-curr": {"0.3": {"per_seed": [0.60, 0.55, 0.60]}}},
            "sens-off": {"fgsm-curr": {"0.3": {"per_seed": [0.30, 0.35, 0.35]}}},
            "sens-fgsm": {"fgsm-curr": {"0.3": {"per_seed": [0.05, 0.55, 0.35]}}}}
    s = study(defs, ablations=control(fgsm_curr=0.30), seeds={"seeds": [0, 1, 2], "defenders": runs})
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[1:-1]]
            for r in "\n".join(s.family(lambda st: controls.q2_decomposition(st, "adv-fgsm-4"))).splitlines()
            if r.startswith("| ") and "step" not in r and "---" not in r}
    online, sens = rows["online vs lagged attack"], rows["the sensitivity term"]
    assert online[2] == "-0.300" and online[5] == "-0.250" and online[7] == "3"
    # its interval: the paired t over the seeds plus the main seed's discordant images (60 of 200, all one way)
    ref = paired.across_seeds([-0.30, -0.20, -0.25], (60 / N - (60 / N) ** 2) / N)
    lo, hi = ref.interval()
    assert online[6] == f"{lo:+.3f} to {hi:+.3f}" and hi < 0
    assert sens[5] == "-0.017" and float(sens[6].split(" to ")[0]) < 0 < float(sens[6].split(" to ")[1])
    assert online[8].endswith("(Holm)") and float(online[8].split()[0]) == pytest.approx(min(1, 2 * ref.p), rel=0.02)
    # a side run at the main seed only: the row says so instead of inventing an interval
    alone = study(defs, ablations=control(fgsm_curr=0.30))
    assert "| main seed only |" in "\n".join(controls.q2_decomposition(alone, "adv-fgsm-4"))


def test_q3_difference_in_differences_across_seeds():
    def d(name, own, other):
        return obj(name, {"attnet-curr:mlp": at(own), "attnet-curr:conv": at(other), "worst-case": at(0.99)})
    defs = {"minimax": d("minimax", 0.10, 0.40), "pgd-at": d("pgd-at", 0.10, 0.12)}

    def seeds(minimax_conv):
        per = {"minimax": {"attnet-curr:mlp": [0.10, 0.10, 0.10], "attnet-curr:conv": minimax_conv},
               "pgd-at": {"attnet-curr:mlp": [0.10, 0.10, 0.10], "attnet-curr:conv": [0.12, 0.12, 0.12]}}
        return {"seeds": [0, 1, 2], "defenders": {k: {a: {"0.3": {"per_seed": v}} for a, v in c.items()}
                                                  for k, c in per.items()}}
    steady = controls.architecture_did(study(defs, seeds=seeds([0.40, 0.38, 0.42])))
    main, across = steady.split(" Across ")
    assert "difference +0.280" in main and "**the game defenses lose more" in main
    # per seed: +0.28, +0.26, +0.30; their t interval, widened by the main seed's image variance
    img = controls._did({k: controls._arch_gap(study(defs), k, "attnet-curr:mlp") for k in defs},
                        ["minimax"], ["pgd-at"])[1]
    lo, hi = paired.across_seeds([0.28, 0.26, 0.30], img).interval()
    assert across.startswith("3 training seeds (0, 1, 2;") and f"{lo:+.3f} to {hi:+.3f}" in across
    assert "+0.280 on average" in across and "**the game defenses lose more" in across
    # the main seed alone says "more", the seeds disagree: across seeds it is no real difference
    noisy = controls.architecture_did(study(defs, seeds=seeds([0.40, 0.05, 0.60])))
    assert "**the game defenses lose more" in noisy.split(" Across ")[0]
    assert "**no difference shown" in noisy.split(" Across ")[1]
    assert " Across " not in controls.architecture_did(study(defs))  # one seed: the main seed's control only


def test_the_seed_table_gives_each_cell_its_seed_level_interval():
    from advgame.report.sections import seeds_section

    defs = {"minimax": obj("minimax", {"worst-case": at(0.80)})}
    per = [0.80, 0.70, 0.90]
    table = {"seeds": [0, 1, 2], "defenders": {"minimax": {"worst-case": {"0.3": {
        "per_seed": per, "mean": 0.8, "sd": 0.1, "min": 0.7, "max": 0.9}}}}}
    text = seeds_section(study(defs, seeds=table))
    m, lo, hi = verdicts.seed_interval(per, N)
    assert f"; 0.800 ({lo:.3f}–{hi:.3f}), ±0.100 [0.700–0.900]" in text
    assert lo < 0.70 and hi > 0.90  # three seeds this far apart: wider than their range
    assert "seed-level 95% interval" in text
