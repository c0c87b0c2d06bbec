"""pgd-adaptive on a MagNet-like defender (issue 31): where the detector rejects plain PGD's
examples, the adaptive attack finds accepted misclassifications, and the present recipe (guided
starts nearest first, cosine step size) is at least as strong as the one it replaced (weights 10
then 3, a random and one guided start, a fixed step of 2.5 eta / steps)."""
import torch

from advgame.attacks import adaptive
from advgame.attacks.adaptive import adaptive_pgd, guided_starts, joint_loss, step_sizes
from advgame.attacks.core import project
from advgame.attacks.pgd import pgd
from advgame.evaluation.crosseval import Plan
from advgame.models import eval_mode


def previous_recipe(d, x, y, eta, steps):
    """pgd-adaptive before issue 31, rebuilt from the module's run loop."""
    noise = torch.empty(x.shape).uniform_(-eta, eta, generator=torch.Generator().manual_seed(0))
    starts = [(x + noise).clamp(0, 1), project(guided_starts(d, x, y)[0], x, eta)]
    best, fooled = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    with eval_mode(d.model):
        for w in (10.0, 3.0):
            for x0 in starts:
                i = (~fooled).nonzero().flatten()
                xa, f, _ = adaptive._run(joint_loss(d, "margin", w), x[i], y[i], x0[i], eta,
                                         [2.5 * eta / steps] * steps, True)
                best[i[f]], fooled[i[f]] = xa[f], True
    return best


def test_finds_accepted_misclassifications_where_plain_pgd_is_rejected(tiny_magnet):
    d, x, y = tiny_magnet
    ok = lambda xb, yb: d.errors(xb, yb, clean=False, batch=len(xb))  # noqa: E731
    plain = pgd(d.model, x, y, 0.3, steps=10, success=ok)
    wrong, rejected = d.outcome(plain, y)
    assert rejected.float().mean() >= 0.9  # the detector rejects plain PGD's examples
    aware = adaptive_pgd(d, x, y, 0.3, steps=10)
    e_plain, e_aware = d.errors(plain, y, False).float().mean(), d.errors(aware, y, False).float().mean()
    assert e_plain <= 0.1 and e_aware >= 0.8
    assert (aware - x).abs().max() <= 0.3 + 1e-6 and aware.min() >= 0 and aware.max() <= 1


def test_at_least_as_strong_as_the_previous_recipe(tiny_magnet):
    d, x, y = tiny_magnet
    for eta in (0.2, 0.3):
        old = d.errors(previous_recipe(d, x, y, eta, 10), y, False)
        new = d.errors(adaptive_pgd(d, x, y, eta, steps=10), y, False)
        assert new.sum() >= old.sum(), eta


def test_guided_starts_nearest_first_and_pool(tiny_magnet):
    d, x, y = tiny_magnet
    g = guided_starts(d, x[:20], y[:20], k=3, pool=(x, y))
    assert g.shape == (3, *x[:20].shape)
    dist = (g - x[:20]).flatten(2).norm(dim=2)
    assert (dist[0] <= dist[1] + 1e-6).all() and (dist[1] <= dist[2] + 1e-6).all()
    wrong, rejected = d.outcome(g[2], y[:20])
    assert (wrong & ~rejected).all()


def test_step_sizes_fall_from_half_eta():
    s = step_sizes(0.3, 10)
    assert len(s) == 10 and abs(s[0] - 0.15) < 1e-9 and all(a >= b for a, b in zip(s, s[1:]))
    assert s[-1] > 0.3 * adaptive.STEP_MIN


def test_plan_threads_the_params():
    from advgame.config import load

    p = load()
    plan = Plan.from_params(p)
    assert plan.adaptive_starts == p.eval.adaptive_starts and plan.adaptive_weights == p.eval.adaptive_weights
    assert plan.adaptive_guided_eta == p.eval.adaptive_guided_eta
