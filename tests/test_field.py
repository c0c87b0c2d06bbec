"""PGD-AT, TRADES and fgsm-rs objectives (advgame.field)."""
import copy

import pytest
import torch
import torch.nn.functional as F

from advgame.attacks.core import ce_loss, input_grad
from advgame.attacks.pgd import pgd
from advgame.config import Params, TrainParams
from advgame.defenses import field
from advgame.models import SmallCNN
from advgame.training import error_rate, fit, standard_objective

ETA = 0.1  # on a 1-epoch fine-tune a small budget separates the defenses from standard training
TUNE = TrainParams(epochs=1, batch=50, lr=1e-3)


def _pgd_error(model, x, y):
    return error_rate(model, pgd(model, x, y, ETA, steps=5), y)


@pytest.fixture(scope="module")
def standard_tuned(trained_smallcnn, tiny_mnist):
    x, y, xt, yt = tiny_mnist
    m = copy.deepcopy(trained_smallcnn[0])
    fit(m, x, y, standard_objective, TUNE)
    return _pgd_error(m, xt, yt)


@pytest.mark.parametrize("objective", [
    field.pgd_at_objective(ETA, 2, 2.5),
    field.trades_objective(ETA, 2, 2.5, 6.0),
    field.fgsm_rs_objective(ETA, 1.25),
], ids=["pgd-at", "trades", "fgsm-rs"])
def test_defense_lowers_pgd_error(objective, trained_smallcnn, tiny_mnist, standard_tuned):
    x, y, xt, yt = tiny_mnist
    m = copy.deepcopy(trained_smallcnn[0])  # the same init as standard training
    fit(m, x, y, objective, TUNE)
    assert _pgd_error(m, xt, yt) < standard_tuned - 0.05


@pytest.fixture
def small(tiny_mnist):
    torch.manual_seed(0)
    x, y = tiny_mnist[0][:16], tiny_mnist[1][:16]
    return SmallCNN(), x, y


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_trades_with_beta_zero_is_standard_training(small):
    m, x, y = small
    loss = field.trades_objective(0.3, 2, 2.5, beta=0.0)(m, x, y)
    ref = standard_objective(m, x, y)
    assert torch.equal(loss.detach(), ref.detach())
    for g, r in zip(_grads(m, loss), _grads(m, ref)):
        assert torch.equal(g, r)


def test_trades_loss_is_ce_plus_beta_kl_clean_to_adversarial(small):
    m, x, y = small
    xa = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    # the reference: nn.KLDivLoss on (log p(x'), p(x)) = KL(p(x) || p(x')), batchmean
    kl = F.kl_div(F.log_softmax(m(xa), 1), F.softmax(m(x), 1), reduction="batchmean")
    expected = F.cross_entropy(m(x), y) + 6.0 * kl
    got = field.trades_loss(m, x, xa, y, 6.0)
    assert torch.allclose(got, expected, atol=1e-6)


def test_kl_is_from_clean_to_adversarial():
    a, b = 3 * torch.randn(8, 10, generator=torch.Generator().manual_seed(0)), torch.zeros(8, 10)
    pa, lpa, lpb = F.softmax(a, 1), F.log_softmax(a, 1), F.log_softmax(b, 1)
    assert torch.allclose(field.kl_div(a, b), (pa * (lpa - lpb)).sum(1))
    assert not torch.allclose(field.kl_div(a, b), field.kl_div(b, a), atol=1e-3)


def test_trades_inner_max_raises_kl_within_budget(small):
    m, x, _ = small
    gen = torch.Generator().manual_seed(0)
    xa = field.trades_example(m, x, 0.3, 5, 2.5 * 0.3 / 5, gen)
    assert (xa - x).abs().max() <= 0.3 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert field.kl_div(m(x), m(xa)).mean() > 10 * field.kl_div(m(x), m(start)).mean()


def test_pgd_at_example_in_budget_and_stronger_than_random_start(small):
    m, x, y = small
    xa = field.pgd_example(m, x, y, 0.3, 5, 2.5 * 0.3 / 5, torch.Generator().manual_seed(0))
    assert (xa - x).abs().max() <= 0.3 + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    x0 = (x + torch.empty(x.shape).uniform_(-0.3, 0.3, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        assert ce_loss(m, xa, y).mean() > ce_loss(m, x0, y).mean()


def test_pgd_at_gradient_treats_the_example_as_constant(small):
    m, x, y = small
    loss = field.pgd_at_objective(0.3, 3, 2.5, seed=5)(m, x, y)
    xa = field.pgd_example(m, x, y, 0.3, 3, 2.5 * 0.3 / 3, torch.Generator().manual_seed(5))
    ref = F.cross_entropy(m(xa), y)
    assert torch.equal(loss.detach(), ref.detach())
    for g, r in zip(_grads(m, loss), _grads(m, ref)):
        assert torch.allclose(g, r, atol=1e-7)


def test_fgsm_rs_example_one_step_of_alpha_from_random_start(small):
    m, _, y = small
    torch.manual_seed(1)
    x = 0.4 + 0.2 * torch.rand(16, 1, 28, 28)  # mid-grey: [0, 1] clipping never binds
    eta, alpha = 0.1, 0.125
    xa = field.fgsm_rs_example(m, x, y, eta, alpha, torch.Generator().manual_seed(3))
    assert (xa - x).abs().max() <= eta + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    x0 = x + torch.empty(x.shape).uniform_(-eta, eta, generator=torch.Generator().manual_seed(3))
    s = input_grad(m, x0, y).sign()
    moved = (xa - x) * s
    # delta0 + alpha * sign, clipped at eta: at least alpha - eta along the gradient sign
    assert moved[s != 0].min() >= alpha - eta - 1e-6
    assert torch.allclose(xa[s != 0], torch.minimum(torch.maximum(x0 + alpha * s, x - eta), x + eta)[s != 0])


def test_fgsm_rs_examples_stay_in_budget_on_real_digits(small):
    m, x, y = small
    xa = field.fgsm_rs_example(m, x, y, 0.3, 1.25 * 0.3, torch.Generator().manual_seed(0))
    assert (xa - x).abs().max() <= 0.3 + 1e-6 and xa.min() >= 0 and xa.max() <= 1


def test_objective_for_reads_each_defense_section():
    p = Params.model_validate({"trades": {"beta": 0.0}})
    for d in ("pgd-at", "trades", "fgsm-rs"):
        assert callable(field.objective_for(d, p, 0.3))
    with pytest.raises(ValueError):
        field.objective_for("magnet", p, 0.3)
