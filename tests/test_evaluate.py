import math

import pytest
import torch

from advgame import attack_table
from advgame.attacks.pgd import run_curr
from advgame.attacks.target import Call, Defender
from advgame.evaluation.crosseval import Plan, evaluate_defender
from advgame.evaluation.sanity import sanity_checks
from advgame.evaluation.stats import cell, wilson


def test_wilson_known_values():
    # reference values: statsmodels proportion_confint(5, 100, method="wilson")
    lo, hi = wilson(5, 100)
    assert lo == pytest.approx(0.021543, abs=1e-5) and hi == pytest.approx(0.111759, abs=1e-5)
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0
    # textbook: Newcombe (1998), Stat. Med. 17:857, Table I, 81 of 263 -> 0.2553 to 0.3662
    assert wilson(81, 263) == pytest.approx([0.2553, 0.3662], abs=5e-5)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_cell_mean_and_sd_over_seeds():
    a = torch.tensor([True, False, False, False])
    b = torch.tensor([True, True, False, False])
    c = cell([a, b])
    assert c["error"] == pytest.approx(0.375) and c["n"] == 4 and c["seeds"] == 2
    assert c["sd"] == pytest.approx(torch.tensor([0.25, 0.5]).std().item(), abs=1e-6)
    assert "sd" not in cell([a])


def _plan(**kw):
    base = dict(etas=[0.1, 0.3], main_eta=0.3, pgd_steps=10, batch=100, strong_attacks=["apgd-ce", "square"],
                apgd_iters=10, square_queries=30, sanity_eta=1.0)
    base.update(kw)
    return Plan(**base)


def test_evaluate_defender_on_trained_model(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:120], y[:120]
    torch.manual_seed(0)
    h = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 784), torch.nn.Unflatten(1, (1, 28, 28)))
    plan = _plan(own_attackers={"mlp": h}, fgsm_sources={1: model})
    out = evaluate_defender(Defender("m", model, model), x, y, plan)
    r = out["results"]
    assert set(r["clean"]) == {"0"} and r["clean"]["0"]["n"] == 120
    for a in ("fgsm-1", "fgsm-curr", "pgd-curr", "attnet-curr:mlp", "worst-case"):
        assert set(r[a]) == {"0.1", "0.3"}, a
    assert not any(a.startswith("attnet-transfer:") for a in r)  # the transfer stage's, not the eval's
    # the strong set on every image at the main eta only, and the JSON says what ran where
    assert r["apgd-ce"]["0.3"]["n"] == 120 and "0.1" not in r["apgd-ce"] and "0.1" not in r["square"]
    assert {"apgd-ce", "square", "pgd-curr"} <= set(out["attacks_by_eta"]["0.3"])
    assert "apgd-ce" not in out["attacks_by_eta"]["0.1"] and "pgd-curr" in out["attacks_by_eta"]["0.1"]
    assert "pgd-curr" in out["seconds_by_attack"]  # recorded (speed itself is the benchmark's business)
    # FGSM-1 made against the defender itself is FGSM-curr
    assert r["fgsm-1"]["0.3"]["error"] == r["fgsm-curr"]["0.3"]["error"]
    # worst case is at least every single attack
    for a, c in r.items():
        if "0.3" in c and c["0.3"]["n"] == 120:
            assert r["worst-case"]["0.3"]["error"] >= c["0.3"]["error"] - 1e-9, a
    assert r["pgd-curr"]["0.3"]["error"] > 0.5 > r["clean"]["0"]["error"]
    assert out["sanity"]["pgd_ge_fgsm"] is True
    assert out["sanity"]["error_grows_to_one"] is True  # PGD at eta 1 fools an undefended model
    assert out["sanity"]["black_box_le_white_box"] is not None
    assert out["sanity"]["saturated"] is None  # saturation_n 0: not run
    assert out["sanity"]["attnet_attacks"] is None  # not the baseline
    # the cascade: each entry only on what everything before it left, its cell the error after it
    c = out["cascade"]["0.3"]
    assert list(c) == ["apgd-ce", "square"]
    before = round(r["worst-case"]["0.3"]["error"] * 120) - c["apgd-ce"]["new"] - c["square"]["new"]
    assert c["apgd-ce"]["ran_on"] == 120 - before
    assert c["square"]["ran_on"] == c["apgd-ce"]["ran_on"] - c["apgd-ce"]["new"]
    assert r["square"]["0.3"]["error"] == r["worst-case"]["0.3"]["error"]
    assert r["apgd-ce"]["0.3"]["error"] >= r["pgd-curr"]["0.3"]["error"]
    assert out["n_by_eta"] == {"0.1": 120, "0.3": 120}


def test_cascade_is_as_strong_as_the_flat_evaluation_and_saturation_reruns_it(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:60], y[:60]
    kw = dict(etas=[0.15], main_eta=0.15, strong_attacks=["apgd-ce", "apgd-t", "fab-t", "square"],
              apgd_targets=2, fab_targets=1, fab_iters=10, sanity_eta=0)
    cas = evaluate_defender(Defender("m", model, model), x, y, _plan(**kw, saturation_n=30))
    flat = evaluate_defender(Defender("m", model, model), x, y, _plan(**kw, cascade=False))
    rc, rf = cas["results"], flat["results"]
    # the flat run attacks every image with every entry; the cascade only the unfooled ones
    assert all(v["ran_on"] == 60 for v in flat["cascade"]["0.15"].values())
    assert cas["cascade"]["0.15"]["apgd-t"]["ran_on"] < 60
    # the attacks' draws are keyed by image (attacks/keyed.py): every image the flat run fools,
    # the cascade fools too (the flat run's attack meets it with the same draws, or one before did)
    from advgame import masks as packing
    wc, wf = (packing.unpack(r["per_image"]["worst-case"]["0.15"], 60) for r in (cas, flat))
    assert all(c or not f for c, f in zip(wc, wf))
    assert rc["worst-case"]["0.15"]["error"] >= rf["worst-case"]["0.15"]["error"]
    errs = [rc[a]["0.15"]["error"] for a in ("pgd-curr", "apgd-ce", "apgd-t", "fab-t", "square")]
    assert errs == sorted(errs)  # each cascade cell counts everything before it
    sat = cas["saturation"]
    assert sat["n"] == 30 and sat["settings"]["apgd_iters"] == 20 and sat["settings"]["square_restarts"] == 2
    worst = packing.unpack(cas["per_image"]["worst-case"]["0.15"], 60)
    assert sat["attacked"] == 30 - sum(worst[:30])
    assert cas["sanity"]["saturated"] is (sat["change"] <= 0.005)


def test_the_sweep_subset_and_the_main_eta_see_different_images(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:80], y[:80]
    out = evaluate_defender(Defender("m", model, model), x, y,
                            _plan(n_sweep=50, strong_attacks=["apgd-ce"], sanity_eta=0.5))
    r = out["results"]
    assert r["pgd-curr"]["0.1"]["n"] == 50 and r["pgd-curr"]["0.3"]["n"] == 80
    assert r["worst-case"]["0.3"]["n"] == 80 and out["n_by_eta"] == {"0.1": 50, "0.3": 80}


def test_strong_attacks_come_from_the_attack_table(trained_smallcnn):
    assert {"apgd-ce", "apgd-dlr", "apgd-t", "square"} <= set(attack_table.names(needs="strong"))
    model, x, y = trained_smallcnn
    with pytest.raises(ValueError, match="unknown strong attack"):
        evaluate_defender(Defender("m", model, model), x[:4], y[:4], _plan(strong_attacks=["fab"]))


def test_art_check_cells(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:50], y[:50]
    out = evaluate_defender(Defender("m", model, model), x, y, _plan(
        etas=[0.3], strong_attacks=[], art_attacks=["apgd-ce"], art_etas=[0.3], art_n=20,
        art_apgd_iters=5, sanity_eta=0))
    r = out["results"]
    assert r["art:apgd-ce"]["0.3"]["n"] == 20 and r["pgd-curr:art-subset"]["0.3"]["n"] == 20


def _main_masks(out: dict, n: int, key: str) -> dict[str, list[bool]]:
    from advgame import masks as packing
    return {a: packing.unpack(t["0" if a == "clean" else key], n) for a, t in out["per_image"].items()}


def test_the_cascade_attacks_the_images_art_fooled(trained_smallcnn, monkeypatch):
    """ART is the independent check: its finds count in worst-case, but the cascade attacks them
    as if ART had not run (else the report's "ART only" could never show an image we miss)."""
    model, x, y = trained_smallcnn
    x, y = x[:40], y[:40]
    monkeypatch.setattr("advgame.attacks.art.run", lambda c: torch.zeros_like(c.x))  # a blank: most digits "fooled"
    out = evaluate_defender(Defender("m", model, model), x, y, _plan(
        etas=[0.05], main_eta=0.05, strong_attacks=["apgd-ce"], art_attacks=["apgd-ce"], art_etas=[0.05],
        art_n=40, sanity_eta=0))
    m = _main_masks(out, 40, "0.05")
    ours = [any(v[i] for a, v in m.items() if a not in ("art:apgd-ce", "apgd-ce", "worst-case")) for i in range(40)]
    assert any(a and not o for a, o in zip(m["art:apgd-ce"], ours))  # the check found images nothing else had
    assert out["cascade"]["0.05"]["apgd-ce"]["ran_on"] == 40 - sum(ours)
    assert m["worst-case"] == [o or c or a for o, c, a in zip(ours, m["apgd-ce"], m["art:apgd-ce"])]


def test_the_saturation_reruns_finds_count_in_worst_case(trained_smallcnn, monkeypatch):
    """What the rerun at twice the budget fools is fooled: it joins worst-case at the main eta
    and, through it, the larger etas' (a find inside the smaller ball is one in the larger)."""
    from advgame.attacks import square
    model, x, y = trained_smallcnn
    x, y = x[:40], y[:40]
    real = square.run
    monkeypatch.setattr(square, "run", lambda c: torch.zeros_like(c.x) if c.plan.square_queries > 30 else real(c))
    out = evaluate_defender(Defender("m", model, model), x, y, _plan(
        etas=[0.05, 0.1], main_eta=0.05, strong_attacks=["square"], square_queries=30, saturation_n=40,
        sanity_eta=0))
    sat, m = out["saturation"], _main_masks(out, 40, "0.05")
    assert sat["more"] > 0 and sat["settings"]["square_queries"] == 60
    before = [any(v[i] for a, v in m.items() if a != "worst-case") for i in range(40)]
    assert sum(m["worst-case"]) == sum(before) + sat["more"] and all(w or not b for w, b in zip(m["worst-case"], before))
    r = out["results"]["worst-case"]
    assert r["0.05"]["error"] == pytest.approx(sum(m["worst-case"]) / 40) and r["0.1"]["error"] >= r["0.05"]["error"]


def test_rejecting_defender_counts_rejected_clean_as_error(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:40], y[:40]
    reject_all = Defender("d", model, model, reject=lambda xb: torch.ones(len(xb), dtype=torch.bool))
    assert reject_all.errors(x, y, clean=True).all()
    assert not reject_all.errors(x, y, clean=False).any()  # every adversarial input is caught
    out = evaluate_defender(reject_all, x, y, _plan(art_attacks=[], etas=[0.3], sanity_eta=0))
    assert out["results"]["clean"]["0"]["error"] == 1.0
    assert out["results"]["pgd-curr"]["0.3"]["error"] == 0.0
    assert "pgd-curr:grey-box" in out["results"]


def _c(e, n=1000):
    return {"error": e, "ci95": wilson(e * n, n), "n": n}


def test_sanity_checks_flag_gradient_masking():
    plan = _plan()
    good = {"fgsm-curr": {"0.3": _c(0.5)}, "pgd-curr": {"0.3": _c(0.7)},
            "apgd-ce": {"0.3": _c(0.72)},
            "square": {"0.3": _c(0.4)}, "attnet-transfer:a:mlp": {"0.3": _c(0.3)}}
    good["worst-case"] = {"0.3": _c(0.72)}
    cascade = {"apgd-ce": {"ran_on": 300, "new": 20}, "square": {"ran_on": 280, "new": 2}}
    sat = {"eta": "0.3", "n": 200, "attacked": 50, "more": 1, "change": 0.005}
    s, _ = sanity_checks(good, plan, _c(1.0, 200), "pgd-curr", cascade, sat)
    assert s == {"pgd_ge_fgsm": True, "error_grows_to_one": True, "black_box_le_white_box": True,
                 "transfer_le_white_box": True, "saturated": True, "attnet_le_pgd": None,
                 "attnet_attacks": None}
    masked = {**good, "pgd-curr": {"0.3": _c(0.2)},
              "fgsm-curr": {"0.3": _c(0.1)}, "square": {"0.3": _c(0.6)}, "apgd-ce": {"0.3": _c(0.25)},
              "attnet-transfer:a:mlp": {"0.3": _c(0.5)}}
    s, detail = sanity_checks(masked, plan, _c(0.3, 200), "pgd-curr",
                              {**cascade, "square": {"ran_on": 280, "new": 6}}, {**sat, "more": 2, "change": 0.01})
    assert s["black_box_le_white_box"] is False and s["transfer_le_white_box"] is False
    assert s["saturated"] is False and s["error_grows_to_one"] is False
    assert "Square fools 6" in detail["black_box_le_white_box"] and "2 more" in detail["saturated"]


def test_attnet_le_pgd():
    plan = _plan()
    res = {"clean": {"0": _c(0.03)}, "pgd-curr": {"0.1": _c(0.3), "0.3": _c(0.9)},
           "attnet-curr:mlp": {"0.1": _c(0.2), "0.3": _c(0.88)}, "attnet-curr:conv": {"0.1": _c(0.1), "0.3": _c(0.5)}}
    s, d = sanity_checks(res, plan, {})
    assert s["attnet_le_pgd"] is True
    # a learned attacker beating PGD beyond the interval at any eta fails the check
    s, d = sanity_checks({**res, "attnet-curr:unet": {"0.1": _c(0.45), "0.3": _c(0.9)}}, plan, {})
    assert s["attnet_le_pgd"] is False and "attnet-curr:unet" in d["attnet_le_pgd"] and "0.1" in d["attnet_le_pgd"]
    # within the interval is not a failure
    s, _ = sanity_checks({**res, "attnet-curr:unet": {"0.3": _c(0.91)}}, plan, {})
    assert s["attnet_le_pgd"] is True


def test_a_detector_defender_is_checked_against_its_detector_aware_pgd():
    # MagNet: pgd-curr ignores the detector, APGD and the learned attackers do not; comparing them
    # with pgd-curr would flag a weak PGD that is only detector-blind
    res = {"clean": {"0": _c(0.03)}, "pgd-curr": {"0.3": _c(0.2)}, "pgd-adaptive": {"0.3": _c(0.73)},
           "apgd-ce": {"0.3": _c(0.28)}, "attnet-curr:mlp": {"0.3": _c(0.29)}}
    s, d = sanity_checks(res, _plan(), {}, "pgd-adaptive")
    assert s["attnet_le_pgd"] is True and "pgd-adaptive" in d["attnet_le_pgd"]
    s, d = sanity_checks(res, _plan(), {})  # judged by the detector-blind PGD, it fails
    assert s["attnet_le_pgd"] is False
    weak = {**res, "pgd-adaptive": {"0.3": _c(0.1)}}  # a weak adaptive attack still fails it
    s, _ = sanity_checks(weak, _plan(), {}, "pgd-adaptive")
    assert s["attnet_le_pgd"] is False


def test_attnet_attacks_on_the_baseline_only():
    res = {"clean": {"0": _c(0.03)}, "pgd-curr": {"0.3": _c(1.0)},
           "attnet-curr:mlp": {"0.3": _c(0.9)}, "attnet-curr:conv": {"0.3": _c(0.5)}}
    s, _ = sanity_checks(res, _plan(is_baseline=True), {})
    assert s["attnet_attacks"] is True
    collapsed = {**res, "attnet-curr:conv": {"0.3": _c(0.035)}}  # no better than the clean error
    s, d = sanity_checks(collapsed, _plan(is_baseline=True), {})
    assert s["attnet_attacks"] is False and "attnet-curr:conv" in d["attnet_attacks"]
    s, _ = sanity_checks(collapsed, _plan(is_baseline=False), {})
    assert s["attnet_attacks"] is None
    s, _ = sanity_checks({k: v for k, v in res.items() if not k.startswith("attnet")}, _plan(is_baseline=True), {})
    assert s["attnet_attacks"] is None


def test_one_missed_image_at_the_top_is_no_failure():
    res = {"pgd-curr": {"0.3": _c(0.998, 500)}, "fgsm-curr": {"0.3": _c(1.0, 500)}}
    s, _ = sanity_checks(res, _plan(), {})
    assert s["pgd_ge_fgsm"] is True
    s, _ = sanity_checks({**res, "pgd-curr": {"0.3": _c(0.904, 500)}}, _plan(), {})
    assert s["pgd_ge_fgsm"] is False


def test_transfer_check_counts_every_white_box_attack():
    from advgame.evaluation.sanity import transfer_check

    def c(e):
        return {"0.3": {"error": e, "ci95": [e - 0.03, e + 0.03], "n": 500}}

    res = {"pgd-curr": c(0.2), "pgd-adaptive": c(0.5), "attnet-transfer:a:mlp": c(0.45), "fgsm-2": c(0.1)}
    ok, detail = transfer_check(res, 0.3)
    assert ok == {"transfer_le_white_box": True}  # the best white-box attack (0.5) is the bar, not PGD (0.2)
    # a cascade cell counts the transfer attacks' finds (they ran before it): never the bar
    ok, _ = transfer_check({**res, "pgd-adaptive": c(0.2), "apgd-ce": c(0.5)}, 0.3)
    assert ok == {"transfer_le_white_box": False}
    res["attnet-transfer:b:conv"] = c(0.7)
    ok, detail = transfer_check(res, 0.3)
    assert ok == {"transfer_le_white_box": False} and "attnet-transfer:b:conv 0.700" in detail["transfer_le_white_box"]
    assert transfer_check({"pgd-curr": c(0.2)}, 0.3)[0] == {"transfer_le_white_box": None}


def test_plan_from_params_copies_every_eval_and_art_field():
    from advgame.config import load

    p = load("params.yaml")
    plan = Plan.from_params(p, classes=7, is_baseline=True)
    e = p.eval
    assert (plan.etas, plan.seeds, plan.pgd_steps, plan.pgd_step_ratio, plan.pgd_restarts, plan.batch) == (
        e.etas, e.seeds, e.pgd_steps, e.pgd_step_ratio, e.pgd_restarts, e.batch)
    assert (plan.strong_attacks, plan.apgd_iters, plan.apgd_restarts, plan.apgd_targets, plan.square_queries) == (
        e.strong_attacks, e.apgd_iters, e.apgd_restarts, e.apgd_targets, e.square_queries)
    assert (plan.n_sweep, plan.saturation_n, plan.fab_targets) == (e.n_test, e.saturation_n, e.fab_targets)
    assert plan.main_eta == p.attack.eta and plan.strong_etas == (e.strong_etas or [p.attack.eta])
    assert (plan.art_attacks, plan.art_etas, plan.art_n, plan.art_apgd_iters, plan.art_square_queries) == (
        p.art.attacks, p.art.etas, p.art.n_test, p.art.apgd_iters, p.art.square_queries)
    assert plan.classes == 7 and plan.is_baseline


def test_per_image_masks_and_larger_eta_keeps_smaller_etas_finds(trained_smallcnn):
    from advgame.masks import unpack

    model, x, y = trained_smallcnn
    x, y = x[:80], y[:80]
    plan = _plan(etas=[0.15, 0.05], strong_attacks=["apgd-ce"], main_eta=0.15, sanity_eta=0,
                 transfer_source=model)
    out = evaluate_defender(Defender("m", model, model), x, y, plan)
    r, per = out["results"], out["per_image"]
    assert set(per["pgd-curr"]) == {"0.15"} and per["clean"] == {"0": per["clean"]["0"]}
    for a in ("pgd-curr", "apgd-ce", "worst-case", "fgsm-curr", "pgd-transfer:baseline"):
        n = r[a]["0.15"]["n"]
        assert sum(unpack(per[a]["0.15"], n)) == round(r[a]["0.15"]["error"] * n), a
    # the etas run in increasing order; every image PGD fooled at 0.05 stays fooled at 0.15
    small = torch.tensor(unpack(per["pgd-curr"]["0.15"], 80))
    d = Defender("m", model, model)
    fresh = d.errors(run_curr(Call(d, x, y, 0.05, plan, 0)), y, False)
    assert not (fresh & ~small).any()
    assert r["pgd-curr"]["0.15"]["error"] >= r["pgd-curr"]["0.05"]["error"]


def test_several_seeds_store_seed_zeros_mask(trained_smallcnn):

    model, x, y = trained_smallcnn
    x, y = x[:40], y[:40]
    d = Defender("m", model, model)
    two = evaluate_defender(d, x, y, _plan(etas=[0.1], main_eta=0.1, seeds=[0, 1], strong_attacks=[], sanity_eta=0))
    one = evaluate_defender(d, x, y, _plan(etas=[0.1], main_eta=0.1, seeds=[0], strong_attacks=[], sanity_eta=0))
    assert two["per_image"]["pgd-curr"]["0.1"] == one["per_image"]["pgd-curr"]["0.1"]
    assert two["results"]["pgd-curr"]["0.1"]["seeds"] == 2
