"""The adaptive white-box attack on a defense with a detector (advgame.attacks.adaptive), and the
detector's part of the evaluation: fooled-and-undetected at least as often as the detector-blind
PGD, ~1 at eta 1, budget and range, batch size and early stop not changing the result, and the
eval JSON's `detector` section."""
import pytest
import torch

from advgame.attacks.adaptive import adaptive_pgd, guided_starts, joint_loss
from advgame.attacks.apgd import apgd, apgd_t
from advgame.attacks.pgd import pgd
from advgame.attacks.square import square
from advgame.evaluation.crosseval import Plan, evaluate_defender
from advgame.masks import unpack


def fooled_undetected(d, xa, y):
    return d.errors(xa, y, clean=False)


def test_beats_the_detector_blind_pgd(tiny_magnet):
    d, x, y = tiny_magnet
    blind = pgd(d.model, x, y, 0.3, steps=10)  # ignores the detector: most of it is rejected
    aware = adaptive_pgd(d, x, y, 0.3, steps=10)
    e_blind, e_aware = fooled_undetected(d, blind, y), fooled_undetected(d, aware, y)
    assert e_aware.float().mean() >= e_blind.float().mean()
    assert e_aware.float().mean() > 0.5
    assert (aware - x).abs().max() <= 0.3 + 1e-6 and aware.min() >= 0 and aware.max() <= 1


def test_eta_one_fools_every_image(tiny_magnet):
    d, x, y = tiny_magnet
    xa = adaptive_pgd(d, x, y, 1.0, steps=5)
    assert fooled_undetected(d, xa, y).float().mean() >= 0.99
    # the detector-aware PGD of the plain evaluation does not get there (MagNet's old failure)
    old = pgd(d.model, x, y, 1.0, steps=5, loss=d.attack_loss,
              success=lambda xb, yb: d.errors(xb, yb, clean=False, batch=len(xb)))
    assert fooled_undetected(d, old, y).float().mean() < 0.5


def test_guided_start_is_an_accepted_image_of_another_class(tiny_magnet):
    d, x, y = tiny_magnet
    g = guided_starts(d, x, y, batch=33)[0]
    wrong, rejected = d.outcome(g, y)
    assert (wrong & ~rejected).all()  # another class, labelled as such, accepted
    assert torch.equal(g, guided_starts(d, x, y, batch=1000)[0])


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_batch_size_and_early_stop_do_not_change_the_result(tiny_magnet, eta):
    d, x, y = tiny_magnet
    x, y = x[:30], y[:30]
    a = adaptive_pgd(d, x, y, eta, steps=4, batch=7, seed=2)
    assert torch.equal(a, adaptive_pgd(d, x, y, eta, steps=4, batch=1000, seed=2))
    assert torch.equal(a, adaptive_pgd(d, x, y, eta, steps=4, batch=1000, seed=2, early_stop=False))


def test_joint_loss_counts_success_as_misclassified_and_undetected(tiny_magnet):
    d, x, y = tiny_magnet
    lv, fooled = joint_loss(d, "ce")(x, y)
    assert torch.equal(fooled, d.errors(x, y, clean=False)) and lv.shape == (len(x),)


@pytest.mark.parametrize("name", ["apgd-dlr", "apgd-t", "square"])
def test_margin_attacks_see_the_detector(tiny_magnet, name):
    # with the detector term, APGD-DLR, APGD-T and Square find more undetected errors than
    # with the detector-blind loss (both count success as misclassified and undetected)
    from advgame.attacks.adaptive import joint_margin

    d, x, y = tiny_magnet
    ok = lambda xb, yb: d.errors(xb, yb, clean=False, batch=len(xb))  # noqa: E731
    if name == "apgd-dlr":
        blind = apgd(d.model, x, y, 0.3, 20, "dlr", success=ok)
        aware = apgd(d.model, x, y, 0.3, 20, joint_loss(d, "dlr"), success=ok)
    elif name == "apgd-t":
        blind = apgd_t(d.model, x, y, 0.3, 10, 2, success=ok)
        aware = apgd_t(d.model, x, y, 0.3, 10, 2, success=ok, loss=joint_loss(d, "dlr-t"))
    else:
        # Square's iterates sit on the ball's corners: at eta 0.3 nearly every one is rejected
        # and 100 queries fool 0-2 of 100 either way, a count that moved with the CPU's kernels
        # (issue 33). At eta 0.15 with 200 queries the aware search gets 17-21 of 100 accepted
        # and misclassified, the blind one 3-4 (AVX-512, AVX2, MKL_CBWR=COMPATIBLE, default).
        # Blind = the same one-pass objective without its detector term (weight 0: the same
        # x_adv as success=ok, in half the passes).
        blind = square(d.model, x, y, 0.15, 200, objective=joint_margin(d, weight=0.0))
        aware = square(d.model, x, y, 0.15, 200, objective=joint_margin(d))
    (wb, rb), (wa, ra) = d.outcome(blind, y), d.outcome(aware, y)
    e_blind, e_aware = (wb & ~rb).float().mean(), (wa & ~ra).float().mean()
    # seen (every parametrisation, every kernel set): aware - blind >= 0.13, aware >= 0.17,
    # rejected: blind >= 0.94, aware <= 0.35
    assert e_aware >= 0.1 and e_aware >= e_blind + 0.08
    assert ra.float().mean() <= rb.float().mean() - 0.3  # by getting under the threshold


def test_evaluation_of_a_detector_defender(tiny_magnet, trained_smallcnn):
    d, x, y = tiny_magnet
    x, y = x[:60], y[:60]
    base = trained_smallcnn[0]
    plan = Plan(etas=[0.1, 0.3], main_eta=0.3, pgd_steps=5, batch=64, strong_attacks=["apgd-dlr"],
                apgd_iters=5, transfer_source=base, sanity_eta=1.0)
    out = evaluate_defender(d, x, y, plan)
    r = out["results"]
    assert set(r["pgd-adaptive"]) == {"0.1", "0.3"} and "pgd-transfer:baseline" in r
    assert r["worst-case"]["0.3"]["error"] >= r["pgd-adaptive"]["0.3"]["error"]
    assert out["sanity_attack"] == "pgd-adaptive" and out["sanity"]["error_grows_to_one"] is True
    det = out["detector"]
    assert 0 <= det["clean_rejection"]["error"] <= 1 and det["clean_rejection"]["n"] == 60
    for attack in ("pgd-curr", "pgd-adaptive", "apgd-dlr", "fgsm-curr", "pgd-transfer:baseline"):
        c = det["by_attack"][attack]["0.3"]
        assert set(c) == {"detected", "fooled_undetected", "rejected_or_wrong"}
        assert set(c["detected"]) == {"error", "ci95", "n"}
        # the cell's error is the rate counted with rejection = defended
        if attack == "apgd-dlr":  # a cascade entry: over the images it ran on, its cell the error after it
            ran = out["cascade"]["0.3"][attack]
            assert c["fooled_undetected"]["n"] == ran["ran_on"]
            assert round(c["fooled_undetected"]["error"] * ran["ran_on"]) == ran["new"]
        else:
            assert c["fooled_undetected"]["error"] == r[attack]["0.3"]["error"]
        assert c["rejected_or_wrong"]["error"] >= c["fooled_undetected"]["error"]
    assert "1.0" not in det["by_attack"]["pgd-adaptive"]
    # per-image masks of the main eta agree with the cells
    for attack, by in out["per_image"].items():
        for key, hexmask in by.items():
            n = r[attack][key]["n"]
            assert sum(unpack(hexmask, n)) == round(r[attack][key]["error"] * n), attack


def test_pgd_curr_with_the_one_pass_loss_equals_the_plain_one(tiny_magnet):
    from advgame.attacks.pgd import run_curr
    from advgame.attacks.target import Call

    d, x, y = tiny_magnet
    x, y = x[:40], y[:40]
    plan = Plan(etas=[0.3], main_eta=0.3, pgd_steps=5)
    lv, fooled = d.attack_loss.joint_version(x, y)
    assert torch.allclose(lv, d.attack_loss(d.model, x, y), atol=1e-5)
    assert torch.equal(fooled, d.errors(x, y, clean=False))
    plain = pgd(d.model, x, y, 0.3, steps=5, step_size=2.5 * 0.3 / 5, loss=d.attack_loss,
                success=lambda xb, yb: d.errors(xb, yb, clean=False, batch=len(xb)))
    # the gradient's float sums run in another order (one reformer pass, not two): near-equal
    one_pass = d.errors(run_curr(Call(d, x, y, 0.3, plan, 0)), y, False).float().mean()
    assert abs(one_pass - d.errors(plain, y, False).float().mean()) <= 0.05
