"""fgsm-at and sens-fgsm: sens-fgsm without its surrogate is fgsm-at; with it, the extra gradient
is the sensitivity term through the FGSM perturbation (checked by finite differences); both
defend better than standard training on a tiny problem."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgame.attacks.fgsm import fgsm
from advgame.config import TrainParams
from advgame.defenses.fgsm_training import (
    _adversarial_objective,
    fgsm_at_objective,
    sens_fgsm_objective,
    smooth_sens_objective,
)
from advgame.models import SmallCNN
from advgame.training import error_rate, fit, standard_objective

ETA, A = 0.3, 0.5


def param_grad(model, objective, x, y):
    model.zero_grad(set_to_none=True)
    objective(model, x, y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def finite_diff(model, f, h=1e-6):
    """Central differences of the scalar f(model) over every parameter coordinate."""
    out = []
    for p in model.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = f(model)
            flat[i] = old - h
            down = f(model)
            flat[i] = old
            out.append((up - down) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


def input_grad(model, x, y):
    """Per-example grad_x l (summed loss), independent of the module under test."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return g


@pytest.fixture
def tiny_problem():
    """A smooth tiny conv net in float64 (tanh: finite differences never cross a ReLU kink), with
    inputs away from 0 and 1 and tau at the scale of the input gradients, so tanh(g / tau) is in
    its curved range and the clip masks some pixels but not all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    tau = float(input_grad(model, x, y).abs().median())
    return model, x, y, tau


def test_sens_without_surrogate_is_fgsm_at():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    g_at = param_grad(model, fgsm_at_objective(ETA, A), x, y)
    g_off = param_grad(model, sens_fgsm_objective(ETA, A, tau=0.01, surrogate=False), x, y)
    assert torch.allclose(g_off, g_at, rtol=1e-5, atol=1e-7)

    # fgsm-at is the library's FGSM held constant (SmallCNN has no dropout/BN: train = eval mode)
    def reference(m, xb, yb):
        z = fgsm(m, xb, yb, ETA)
        return (1 - A) * F.cross_entropy(m(xb), yb) + A * F.cross_entropy(m(z), yb)

    assert torch.allclose(g_at, param_grad(model, reference, x, y), rtol=1e-5, atol=1e-7)


def test_sens_forward_is_the_exact_fgsm_loss(tiny_problem):
    model, x, y, tau = tiny_problem
    assert torch.equal(sens_fgsm_objective(ETA, A, tau)(model, x, y), fgsm_at_objective(ETA, A)(model, x, y))


def test_smooth_objective_gradient_matches_finite_differences(tiny_problem):
    """The double-backprop gradient of the smooth objective (tanh step in the forward pass too)
    is its true gradient, and the sensitivity term is a real part of it."""
    model, x, y, tau = tiny_problem
    smooth = smooth_sens_objective(ETA, A, tau)
    g_full = param_grad(model, smooth, x, y)
    fd = finite_diff(model, lambda m: smooth(m, x, y).item())
    assert torch.allclose(g_full, fd, rtol=1e-6, atol=1e-9)
    # the same loss with the example held constant misses the sensitivity term
    step = lambda g: ETA * torch.tanh(g / tau)  # noqa: E731
    g_const = param_grad(model, _adversarial_objective(ETA, A, step, create_graph=False), x, y)
    assert (g_full - g_const).norm() > 0.05 * g_full.norm()
    assert not torch.allclose(g_const, fd, rtol=1e-3, atol=1e-6)


def test_sens_extra_term_matches_finite_differences(tiny_problem):
    """sens-fgsm minus fgsm-at = d/du <c, eta tanh(grad_x l(u) / tau)>, where c is the gradient of
    the adversarial loss term with respect to the step at the exact FGSM example (a constant, with
    the clip mask in it): the straight-through backward of the sensitivity term."""
    model, x, y, tau = tiny_problem
    g_sens = param_grad(model, sens_fgsm_objective(ETA, A, tau), x, y)
    g_at = param_grad(model, fgsm_at_objective(ETA, A), x, y)
    extra = g_sens - g_at
    assert extra.norm() > 0.05 * g_at.norm()

    d = (ETA * input_grad(model, x, y).sign()).requires_grad_(True)
    (c,) = torch.autograd.grad(A * F.cross_entropy(model((x + d).clamp(0, 1)), y), d)
    assert 0 < int((c == 0).sum()) < c.numel()  # the clip removes some pixels, not all
    fd = finite_diff(model, lambda m: float((c * ETA * torch.tanh(input_grad(m, x, y) / tau)).sum()))
    assert torch.allclose(extra, fd, rtol=1e-6, atol=1e-9)


def test_both_defenses_beat_standard_training_under_fgsm(tiny_mnist):
    x, y, xt, yt = tiny_mnist
    cfg = TrainParams(epochs=4, batch=32, lr=3e-3)

    def train(objective):
        torch.manual_seed(0)  # the same init for every objective
        m = nn.Sequential(nn.Conv2d(1, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 5, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
        fit(m, x, y, objective, cfg)
        return error_rate(m, fgsm(m, xt, yt, ETA), yt), error_rate(m, xt, yt)

    std, _ = train(standard_objective)
    for objective in (fgsm_at_objective(ETA, A), sens_fgsm_objective(ETA, A, tau=0.01)):
        adv, clean = train(objective)
        assert adv < std - 0.15, (adv, std)
        assert clean < 0.5
