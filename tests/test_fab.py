"""FAB-T (attacks/fab.py): the L-inf projection onto a hyperplane within the box against a
bisection, the minimal perturbation of a linear model against its closed form, budget and range,
strength against FGSM, the success callback, batch independence and its entry in the table."""
import pytest
import torch
from torch import nn

from advgame import UserError, config
from advgame.attacks.fab import fab_t, projection_linf, run_fab_t
from advgame.attacks.fgsm import fgsm
from advgame.attacks.target import Call, Defender
from advgame.evaluation.crosseval import Plan, evaluate_defender
from advgame.models import predict


def min_step(t, w, b):
    """The smallest lam with which moving every coordinate lam towards the hyperplane (capped at
    the box) reaches it, by bisection; inf where the box does not reach it."""
    c = (w * t).sum(1) - b
    w = w * torch.where(c >= 0, 1.0, -1.0)[:, None]
    room = torch.where(w < 0, 1 - t, t)
    need = c.abs()
    lo, hi = torch.zeros(len(t), dtype=t.dtype), torch.ones(len(t), dtype=t.dtype)
    for _ in range(60):
        mid = (lo + hi) / 2
        reach = (w.abs() * torch.minimum(mid[:, None], room)).sum(1) >= need
        lo, hi = torch.where(reach, lo, mid), torch.where(reach, mid, hi)
    return torch.where((w.abs() * room).sum(1) >= need, hi, torch.inf)


def test_projection_is_the_smallest_step_onto_the_hyperplane_in_the_box():
    g = torch.Generator().manual_seed(0)
    n, dim = 300, 40
    t = torch.rand(n, dim, generator=g, dtype=torch.float64)
    w = torch.randn(n, dim, generator=g, dtype=torch.float64)
    w[:, :5] = 0  # coordinates the hyperplane ignores stay put
    b = (w * torch.rand(n, dim, generator=g, dtype=torch.float64)).sum(1)  # through a point of the box
    b[:50] = (w[:50] * t[:50]).sum(1) + 0.01 * torch.randn(50, generator=g, dtype=torch.float64)  # close
    d = projection_linf(t, w, b)
    assert ((w * (t + d)).sum(1) - b).abs().max() < 1e-9
    assert (t + d).min() >= -1e-12 and (t + d).max() <= 1 + 1e-12
    assert (d[:, :5] == 0).all()
    torch.testing.assert_close(d.abs().amax(1), min_step(t, w, b), rtol=1e-6, atol=1e-9)


def test_projection_goes_to_the_nearest_corner_when_the_box_misses_the_hyperplane():
    t = torch.tensor([[0.2, 0.7, 0.5]], dtype=torch.float64)
    w = torch.tensor([[1.0, -2.0, 0.0]], dtype=torch.float64)
    d = projection_linf(t, w, torch.tensor([5.0], dtype=torch.float64))  # w.z <= 1 on the box
    assert torch.allclose(t + d, torch.tensor([[1.0, 0.0, 0.5]], dtype=torch.float64))


@pytest.mark.parametrize("classes", [2, 5])
def test_linear_model_gets_the_closed_form_minimal_perturbation(classes):
    # logits W x + b: the smallest L-inf step making class t beat y is
    # ((w_y - w_t).x + b_y - b_t) / ||w_y - w_t||_1 (x interior, the step small)
    torch.manual_seed(classes)
    lin = nn.Linear(30, classes)
    x = 0.4 + 0.2 * torch.rand(100, 30)
    with torch.no_grad():
        z = lin(x)
    y = z.argmax(1)
    W, B = lin.weight.detach(), lin.bias.detach()

    def closed(t):
        return (z.gather(1, y[:, None]) - z.gather(1, t[:, None]))[:, 0] / (W[y] - W[t]).abs().sum(1)

    xa = fab_t(lin, x, y, 1.0, iters=100, targets=1)
    norm = (xa - x).abs().amax(1)
    pred = predict(lin, xa)
    t1 = z.sort(1, descending=True).indices[:, 1]  # FAB-T's first target
    assert (pred != y).all() and closed(t1).max() < 0.1  # interior: the box is not in the way
    # at or above the distance to the boundary of the class it lands in, within 1% of the target's
    assert (norm >= closed(pred) * (1 - 1e-5)).all()
    assert (norm <= closed(t1) * 1.01).all()


def test_within_budget_and_range(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:40].clone(), y[:40]
    x[0], x[1] = 0.0, 1.0  # pixels on both edges of the range
    for eta in (0.05, 0.2):
        xa = fab_t(m, x, y, eta, iters=10, targets=2, restarts=2)
        assert xa.shape == x.shape and xa.dtype == x.dtype
        assert (xa - x).abs().max().item() <= eta + 1e-6
        assert xa.min().item() >= 0 and xa.max().item() <= 1


def test_fools_at_least_as_many_as_fgsm_and_what_it_reports_is_misclassified(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:100], y[:100]
    eta = 0.1
    xa = fab_t(m, x, y, eta, iters=20, targets=3)
    wrong_clean = predict(m, x) != y
    wrong = predict(m, xa) != y
    changed = (xa != x).flatten(1).any(1)
    assert changed.any() and wrong[changed].all()  # what it moved, it fooled
    assert (wrong == changed | wrong_clean).all()  # what it did not move, it did not fool
    fg = (predict(m, fgsm(m, x, y, eta)) != y).sum().item()
    assert wrong.sum().item() >= fg > wrong_clean.sum().item()


def test_success_callback_is_respected(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:30], y[:30]
    never = fab_t(m, x, y, 0.3, iters=10, targets=2, success=lambda xa, ya: torch.zeros(len(xa), dtype=torch.bool))
    assert torch.equal(never, x)
    # a narrower success, classified as (y + 1) mod 10: every point it keeps meets it, and
    # fewer are kept than with plain misclassification
    def next_class(xa, ya):
        return predict(m, xa) == (ya + 1) % 10

    xa = fab_t(m, x, y, 0.3, iters=10, targets=3, success=next_class)
    moved = (xa != x).flatten(1).any(1)
    assert (predict(m, xa[moved]) == (y[moved] + 1) % 10).all()
    plain = fab_t(m, x, y, 0.3, iters=10, targets=3)
    assert moved.sum() < (plain != x).flatten(1).any(1).sum()


def test_batch_size_does_not_change_the_result(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:20], y[:20]
    # the random starts do not depend on the batch; FAB steps along the gradients' values (not
    # their signs, like PGD and APGD), so a batched forward's float rounding (~1e-6) may move
    # its points by as much, not more
    a = fab_t(m, x, y, 0.1, iters=5, targets=2, restarts=2, batch=7, seed=3)
    b = fab_t(m, x, y, 0.1, iters=5, targets=2, restarts=2, batch=1000, seed=3)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)
    assert torch.equal((a != x).flatten(1).any(1), (b != x).flatten(1).any(1))


def test_restarts_draw_per_image_of_the_evaluated_set(trained_smallcnn):
    # a later restart's random start is the image's own (attacks/keyed.py): attacking a subset
    # gives each of its images what the run on every image gave it
    m, x, y = trained_smallcnn
    x, y = x[:20], y[:20]
    full = fab_t(m, x, y, 0.1, iters=5, targets=2, restarts=2, seed=3, index=torch.arange(20), total=20)
    sub = torch.tensor([1, 4, 5, 11, 19])
    part = fab_t(m, x[sub], y[sub], 0.1, iters=5, targets=2, restarts=2, seed=3, index=sub, total=20)
    torch.testing.assert_close(part, full[sub], rtol=0, atol=1e-4)
    assert torch.equal((part != x[sub]).flatten(1).any(1), (full[sub] != x[sub]).flatten(1).any(1))


def test_a_detector_that_rejects_everything_leaves_nothing_fooled(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:20], y[:20]
    plan = Plan(etas=[0.3], main_eta=0.3, fab_iters=5, fab_targets=2)
    d = Defender("m", m, m, reject=lambda xa: torch.ones(len(xa), dtype=torch.bool))
    assert torch.equal(run_fab_t(Call(d, x, y, 0.3, plan)), x)
    assert not torch.equal(run_fab_t(Call(Defender("m", m, m), x, y, 0.3, plan)), x)


def test_fab_t_runs_from_the_table_when_picked(trained_smallcnn):
    m, x, y = trained_smallcnn
    plan = Plan(etas=[0.1], main_eta=0.1, pgd_steps=2, batch=100, strong_attacks=["fab-t"], fab_iters=5,
                fab_targets=2, sanity_eta=0)
    out = evaluate_defender(Defender("m", m, m), x[:40], y[:40], plan)
    assert out["attacks_by_eta"]["0.1"] == ["fgsm-curr", "pgd-curr", "fab-t"]
    assert out["results"]["fab-t"]["0.1"]["error"] >= out["results"]["clean"]["0"]["error"]


def test_params_reach_the_plan_and_are_validated():
    p = config.parse({"eval": {"fab_iters": 7, "fab_targets": 2}})
    plan = Plan.from_params(p)
    assert (plan.fab_iters, plan.fab_targets) == (7, 2)
    assert config.parse({}).eval.strong_attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]  # AutoAttack's cascade
    for bad in ({"fab_iters": 0}, {"fab_targets": 10}):
        with pytest.raises(UserError, match=f"eval.{next(iter(bad))}"):
            config.parse({"eval": bad})
