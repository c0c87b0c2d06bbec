"""L-inf attacks: FGSM, PGD and the attacker-network example. Pure functions on tensors.

Every attack has the call `attack(model, x, y, eta, ...) -> x_adv`: it puts the model in eval
mode (and restores its mode), works in batches, keeps ||x_adv - x||_inf <= eta and clamps pixels
to [0, 1]. `loss` may replace the per-example cross-entropy (e.g. to add a detector penalty).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of the model on x."""
    return F.cross_entropy(model(x), y, reduction="none")


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _batches(n: int, batch: int):
    for i in range(0, n, batch):
        yield slice(i, min(i + batch, n))


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn = ce_loss) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(model, x, y).sum(), x)
    return g


def project(x_adv: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eta), x + eta).clamp(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, batch: int = 1000,
         loss: LossFn = ce_loss) -> torch.Tensor:
    """FGSM(x; u) = clip(x + eta * sign(grad_x l(g(x; u), y)), 0, 1)."""
    out = torch.empty_like(x)
    with eval_mode(model):
        for s in _batches(len(x), batch):
            g = input_grad(model, x[s], y[s], loss)
            out[s] = (x[s] + eta * g.sign()).clamp(0.0, 1.0)
    return out


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int = 40,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        seed: int = 0, batch: int = 1000, loss: LossFn = ce_loss,
        success: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Madry's L-inf PGD with random start; over restarts keeps, per example, a misclassified
    example if one was found, else the one with the highest loss.

    `success(x_adv, y) -> bool` (e.g. "misclassified and not detected" for a defender with a
    detector) is checked after every step, and an example that succeeds once is kept: an attacker
    that swings back and forth across a detector threshold must not lose what it found."""
    step_size = 2.5 * eta / steps if step_size is None else step_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best = x.clone()
    best_key = torch.full((len(x),), -float("inf"), device=x.device)
    with eval_mode(model):
        for _ in range(restarts):
            # one draw per restart over all of x, so the result does not depend on `batch`
            if random_start:
                noise = torch.empty(x.shape).uniform_(-eta, eta, generator=gen).to(x.device)
            for s in _batches(len(x), batch):
                xb, yb = x[s], y[s]
                xa = (xb + noise[s]).clamp(0.0, 1.0) if random_start else xb.clone()
                done = torch.zeros(len(xb), dtype=torch.bool, device=x.device)
                for _ in range(steps):
                    g = input_grad(model, xa, yb, loss)
                    step = project(xa + step_size * g.sign(), xb, eta)
                    xa = torch.where(done.view(-1, *[1] * (x.ndim - 1)), xa, step)
                    if success is not None:
                        with torch.no_grad():
                            done |= success(xa, yb)
                with torch.no_grad():
                    lv = loss(model, xa, yb)
                    wrong = done | (model(xa).argmax(1) != yb) if success is not None else \
                        model(xa).argmax(1) != yb
                    key = torch.where(wrong, torch.full_like(lv, float("inf")), lv)
                    better = key > best_key[s]
                    best[s][better] = xa[better]
                    best_key[s] = torch.where(better, key, best_key[s])
    return best


PARAMS = ("tanh", "box")


def squash(h: torch.Tensor, x: torch.Tensor, eta: float, param: str = "tanh") -> torch.Tensor:
    """z from the attacker's pre-activation h; within the budget and [0, 1] by construction.

    tanh (the paper's): clip(x + eta * tanh(h), 0, 1); where x + eta * tanh(h) leaves [0, 1] the
    clip is a dead zone (zero gradient). box: lo + (hi - lo) * sigmoid(h) with lo = max(0, x - eta),
    hi = min(1, x + eta): the same set of examples, reached without a dead zone."""
    if param == "box":
        lo, hi = (x - eta).clamp(min=0.0), (x + eta).clamp(max=1.0)
        return lo + (hi - lo) * torch.sigmoid(h)
    if param == "tanh":
        return (x + eta * torch.tanh(h)).clamp(0.0, 1.0)
    raise ValueError(f"attacker parameterisation: unknown '{param}'; allowed values: {', '.join(PARAMS)}")


def attnet_example(attacker: nn.Module, x: torch.Tensor, eta: float) -> torch.Tensor:
    """z(x; v), the one definition used by training, the game and the evaluation; the attacker's
    `param` attribute (set from its params or checkpoint; absent means tanh) picks the form."""
    return squash(attacker(x), x, eta, getattr(attacker, "param", "tanh"))


@torch.no_grad()
def attnet(attacker: nn.Module, x: torch.Tensor, eta: float, batch: int = 1000) -> torch.Tensor:
    out = torch.empty_like(x)
    with eval_mode(attacker):
        for s in _batches(len(x), batch):
            out[s] = attnet_example(attacker, x[s], eta)
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x[s]).argmax(1) for s in _batches(len(x), batch)]) if len(x) else \
            torch.empty(0, dtype=torch.long, device=x.device)
