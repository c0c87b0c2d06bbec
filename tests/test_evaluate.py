import math

import pytest
import torch

from advgame.defenders import Defender
from advgame.evaluate import Plan, cell, evaluate_defender, sanity_checks, wilson


def test_wilson_known_values():
    # reference values: statsmodels proportion_confint(5, 100, method="wilson")
    lo, hi = wilson(5, 100)
    assert lo == pytest.approx(0.021543, abs=1e-5) and hi == pytest.approx(0.111759, abs=1e-5)
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_cell_mean_and_sd_over_seeds():
    a = torch.tensor([True, False, False, False])
    b = torch.tensor([True, True, False, False])
    c = cell([a, b])
    assert c["error"] == pytest.approx(0.375) and c["n"] == 4 and c["seeds"] == 2
    assert c["sd"] == pytest.approx(torch.tensor([0.25, 0.5]).std().item(), abs=1e-6)
    assert "sd" not in cell([a])


def _plan(**kw):
    base = dict(etas=[0.1, 0.3], main_eta=0.3, pgd_steps=10, batch=100, art_attacks=["apgd-ce", "square"],
                art_etas=[0.3], art_n=60, apgd_iters=10, square_queries=30, sanity_eta=1.0)
    base.update(kw)
    return Plan(**base)


def test_evaluate_defender_on_trained_model(trained_smallcnn):
    model, x, y = trained_smallcnn
    x, y = x[:120], y[:120]
    torch.manual_seed(0)
    h = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 784), torch.nn.Unflatten(1, (1, 28, 28)))
    plan = _plan(own_attackers={"mlp": h}, transfer_attackers={("other", "mlp"): h},
                 fgsm_sources={1: model})
    out = evaluate_defender(Defender("m", model, model), x, y, plan)
    r = out["results"]
    assert set(r["clean"]) == {"0"} and r["clean"]["0"]["n"] == 120
    for a in ("fgsm-1", "fgsm-curr", "pgd-curr", "attnet-curr:mlp", "worst-case"):
        assert set(r[a]) == {"0.1", "0.3"}, a
    assert set(r["attnet-transfer:other:mlp"]) == {"0.3"}  # transfer only at the training eta
    assert r["apgd-ce"]["0.3"]["n"] == 60 and "0.1" not in r["apgd-ce"]
    # FGSM-1 made against the defender itself is FGSM-curr
    assert r["fgsm-1"]["0.3"]["error"] == r["fgsm-curr"]["0.3"]["error"]
    # worst case is at least every single attack
    for a, c in r.items():
        if "0.3" in c and c["0.3"]["n"] == 120:
            assert r["worst-case"]["0.3"]["error"] >= c["0.3"]["error"] - 1e-9, a
    assert r["pgd-curr"]["0.3"]["error"] > 0.5 > r["clean"]["0"]["error"]
    assert out["sanity"]["pgd_ge_fgsm"] is True
    assert out["sanity"]["error_grows_to_one"] is True  # PGD at eta 1 fools an undefended model
    assert out["sanity"]["pgd_not_below_apgd"] is not None


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
            "pgd-curr:art-subset": {"0.3": _c(0.7)}, "apgd-ce": {"0.3": _c(0.72)},
            "square": {"0.3": _c(0.4)}, "attnet-transfer:a:mlp": {"0.3": _c(0.3)}}
    s, _ = sanity_checks(good, plan, _c(1.0, 200))
    assert s == {"pgd_ge_fgsm": True, "error_grows_to_one": True, "black_box_le_white_box": True,
                 "transfer_le_white_box": True, "pgd_not_below_apgd": True}
    masked = {**good, "pgd-curr": {"0.3": _c(0.2)}, "pgd-curr:art-subset": {"0.3": _c(0.2)},
              "fgsm-curr": {"0.3": _c(0.1)}, "square": {"0.3": _c(0.6)}, "apgd-ce": {"0.3": _c(0.25)},
              "attnet-transfer:a:mlp": {"0.3": _c(0.5)}}
    s, detail = sanity_checks(masked, plan, _c(0.3, 200))
    assert s["black_box_le_white_box"] is False and s["transfer_le_white_box"] is False
    assert s["pgd_not_below_apgd"] is False and s["error_grows_to_one"] is False
    assert "Square" in detail["black_box_le_white_box"]
