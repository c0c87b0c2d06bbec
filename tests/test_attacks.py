"""FGSM, PGD and the attacker-network example: budget, pixel range, strength on a trained model,
determinism, eval mode, batching."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgame.attacks.attnet import attnet, attnet_example
from advgame.attacks.core import ce_loss
from advgame.attacks.fgsm import fgsm
from advgame.attacks.pgd import pgd
from advgame.models import build_attacker, predict


def error(model, x, y) -> float:
    return (predict(model, x) != y).float().mean().item()


def assert_valid(x_adv, x, eta):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max().item() <= eta + 1e-6
    assert x_adv.min().item() >= 0 and x_adv.max().item() <= 1


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_fgsm_within_budget_and_range(trained_smallcnn, eta):
    m, x, y = trained_smallcnn
    assert_valid(fgsm(m, x, y, eta), x, eta)


@pytest.mark.parametrize("step_size", [None, 0.5])  # a large step must still be projected back
def test_pgd_within_budget_and_range(trained_smallcnn, step_size):
    m, x, y = trained_smallcnn
    x, y = x[:60], y[:60]
    assert_valid(pgd(m, x, y, 0.3, steps=5, step_size=step_size, restarts=2), x, 0.3)


def test_fgsm_matches_closed_form_on_linear_model():
    # for logits Wx + b and cross-entropy, grad_x = W^T (softmax(Wx + b) - onehot(y))
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x, y = torch.rand(8, 1, 3, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    w, b = lin[1].weight, lin[1].bias
    with torch.no_grad():
        p = F.softmax(x.flatten(1) @ w.T + b, 1)
        g = ((p - F.one_hot(y, 3).double()) @ w).view_as(x)
    want = (x + 0.2 * g.sign()).clamp(0, 1)
    assert torch.allclose(fgsm(lin, x, y, 0.2), want)


def test_pgd_one_full_step_without_random_start_is_fgsm(trained_smallcnn):
    # PGD keeps the best of its iterates (x itself and the step): an example already
    # misclassified stays x, any other gets the FGSM step where that raised the loss
    m, x, y = trained_smallcnn
    x, y = x[:50], y[:50]
    p = pgd(m, x, y, 0.3, steps=1, step_size=0.3, random_start=False)
    f = fgsm(m, x, y, 0.3)
    with torch.no_grad():
        wrong = m(x).argmax(1) != y
        up = ce_loss(m, f, y) > ce_loss(m, x, y)
    assert torch.equal(p[wrong], x[wrong])
    assert (up & ~wrong).sum() > 40
    assert torch.allclose(p[up & ~wrong], f[up & ~wrong], atol=1e-6)


@pytest.mark.parametrize("eta", [0.1, 0.3])
def test_attacks_succeed_and_pgd_at_least_fgsm(trained_smallcnn, eta):
    m, x, y = trained_smallcnn
    x, y = x[:200], y[:200]
    clean = error(m, x, y)
    e_fgsm = error(m, fgsm(m, x, y, eta), y)
    e_pgd = error(m, pgd(m, x, y, eta, steps=10), y)
    assert e_pgd >= e_fgsm > clean
    if eta == 0.3:
        assert e_fgsm > 0.7 and e_pgd > 0.9


def test_pgd_seeded(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:40], y[:40]
    a = pgd(m, x, y, 0.3, steps=3, seed=0)
    assert torch.equal(a, pgd(m, x, y, 0.3, steps=3, seed=0))
    assert not torch.equal(a, pgd(m, x, y, 0.3, steps=3, seed=1))


def test_restarts_never_lower_error(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:100], y[:100]
    one = pgd(m, x, y, 0.1, steps=5, restarts=1, seed=3)
    three = pgd(m, x, y, 0.1, steps=5, restarts=3, seed=3)
    wrong1 = predict(m, one) != y
    wrong3 = predict(m, three) != y
    assert not (wrong1 & ~wrong3).any()  # every example fooled once stays fooled
    with torch.no_grad():
        l1, l3 = ce_loss(m.eval(), one, y), ce_loss(m, three, y)
    assert (l3[~wrong3] >= l1[~wrong3] - 1e-5).all()


class ModeProbe(nn.Module):
    """Records whether it was in training mode at each forward pass."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize("start_training", [True, False])
def test_attacks_use_eval_mode_and_restore_it(trained_smallcnn, start_training):
    m, x, y = trained_smallcnn
    probe = ModeProbe(m)
    x, y = x[:10], y[:10]
    for attack in (lambda: fgsm(probe, x, y, 0.3),
                   lambda: pgd(probe, x, y, 0.3, steps=2),
                   lambda: predict(probe, x)):
        probe.train(start_training)
        probe.seen.clear()
        attack()
        assert probe.seen and not any(probe.seen)
        assert probe.training == start_training and m.training == start_training
    att = ModeProbe(build_attacker("conv", (1, 28, 28), width=4))
    att.train(start_training)
    attnet(att, x, 0.3)
    assert att.seen and not any(att.seen) and att.training == start_training
    m.eval()


class Constant(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full_like(x, self.value)


class Wild(nn.Module):
    def forward(self, x):
        return torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * 1e4


@pytest.mark.parametrize("attacker", [Constant(1e6), Constant(-1e6), Constant(float("inf")),
                                      Constant(float("-inf")), Constant(0.0), Wild(),
                                      build_attacker("mlp", (1, 28, 28), hidden=16)])
def test_attnet_example_within_budget_for_any_output(attacker):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    x[0], x[1] = 0.0, 1.0  # pixels on both edges of the range
    with torch.no_grad():
        z = attnet_example(attacker, x, 0.3)
    assert_valid(z, x, 0.3)
    assert_valid(attnet(attacker, x, 0.3, batch=5), x, 0.3)


def test_attnet_example_formula():
    x = torch.rand(4, 1, 28, 28)
    z = attnet_example(Constant(0.5), x, 0.2)
    assert torch.allclose(z, (x + 0.2 * torch.tanh(torch.tensor(0.5))).clamp(0, 1))


def test_attnet_example_is_differentiable_in_attacker():
    att = build_attacker("mlp", (1, 28, 28), hidden=8)
    attnet_example(att, torch.rand(3, 1, 28, 28), 0.3).sum().backward()
    assert all(p.grad is not None for p in att.parameters())


def test_batched_equals_unbatched(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:30], y[:30]
    assert torch.equal(fgsm(m, x, y, 0.3, batch=7), fgsm(m, x, y, 0.3, batch=1000))
    kw = dict(steps=3, restarts=1, seed=5)
    assert torch.equal(pgd(m, x, y, 0.3, batch=7, **kw), pgd(m, x, y, 0.3, batch=1000, **kw))
    att = build_attacker("mlp", (1, 28, 28), hidden=16)
    # matmul blocking depends on the batch size: equal up to float rounding
    assert torch.allclose(attnet(att, x, 0.3, batch=7), attnet(att, x, 0.3, batch=1000),
                          atol=1e-6)
    assert torch.equal(predict(m, x, batch=7), predict(m, x, batch=1000))


def test_pgd_restarts_batched_equals_unbatched(trained_smallcnn):
    m, x, y = trained_smallcnn
    x, y = x[:30], y[:30]
    kw = dict(steps=3, restarts=2, seed=5)
    assert torch.equal(pgd(m, x, y, 0.3, batch=7, **kw), pgd(m, x, y, 0.3, batch=1000, **kw))
