"""Defenses from the wider field, as training.fit objectives `(model, xb, yb) -> loss`:

- PGD-AT (Madry et al. 2018): cross-entropy on the PGD example (random start) of the current
  parameters.
- TRADES (Zhang et al. 2019): CE(g(x), y) + beta * KL(p(x) || p(x')), x' maximising the KL.
- fgsm-rs, "fast" adversarial training (Wong et al. 2020): one FGSM step of size alpha from a
  uniform random start, projected back to the eta ball.

Each factory keeps its own generator for the random starts, so a run is reproducible and every
minibatch gets fresh noise. Adversarial examples are generated in eval mode and are constants
for the parameter update.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from advgame.attacks.core import input_grad, project
from advgame.models import eval_mode
from advgame.training import Objective


def _uniform(x: torch.Tensor, eta: float, gen: torch.Generator) -> torch.Tensor:
    """U(-eta, eta) noise shaped like x, drawn on the CPU (reproducible on every device)."""
    return torch.empty(x.shape).uniform_(-eta, eta, generator=gen).to(x.device)


def pgd_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int,
                step_size: float, gen: torch.Generator) -> torch.Tensor:
    """Madry's L-inf PGD from a uniform random start in the eta ball."""
    with eval_mode(model):
        xa = (x + _uniform(x, eta, gen)).clamp(0.0, 1.0)
        for _ in range(steps):
            xa = project(xa + step_size * input_grad(model, xa, y).sign(), x, eta)
    return xa.detach()


def pgd_at_objective(eta: float, steps: int, step_ratio: float, seed: int = 0) -> Objective:
    gen = torch.Generator().manual_seed(seed)
    step_size = step_ratio * eta / steps

    def objective(model, xb, yb):
        xa = pgd_example(model, xb, yb, eta, steps, step_size, gen)
        return F.cross_entropy(model(xa), yb)

    return objective


def kl_div(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """Per-example KL(p(x) || p(x')) from the two sets of logits."""
    p_log = F.log_softmax(logits_clean, dim=1)
    return (p_log.exp() * (p_log - F.log_softmax(logits_adv, dim=1))).sum(1)


def trades_example(model: nn.Module, x: torch.Tensor, eta: float, steps: int, step_size: float,
                   gen: torch.Generator) -> torch.Tensor:
    """The TRADES inner max: PGD on KL(p(x) || p(x')) from x' = x + 0.001 * N(0, 1), as the
    reference code (yaodongyu/TRADES) does; the start is not clamped, every step is."""
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        xa = x + 0.001 * torch.randn(x.shape, generator=gen).to(x.device)
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(kl_div(logits, model(xa)).sum(), xa)
            xa = project(xa.detach() + step_size * g.sign(), x, eta)
    return xa.detach()


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                beta: float) -> torch.Tensor:
    """CE(g(x), y) + beta * KL(p(x) || p(x')) averaged over the batch ("batchmean"); as in the
    reference, the gradient flows through both p(x) and p(x')."""
    logits = model(x)
    return F.cross_entropy(logits, y) + beta * kl_div(logits, model(x_adv)).mean()


def trades_objective(eta: float, steps: int, step_ratio: float, beta: float, seed: int = 0) -> Objective:
    gen = torch.Generator().manual_seed(seed)
    step_size = step_ratio * eta / steps

    def objective(model, xb, yb):
        return trades_loss(model, xb, trades_example(model, xb, eta, steps, step_size, gen), yb, beta)

    return objective


def fgsm_rs_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, alpha: float,
                    gen: torch.Generator) -> torch.Tensor:
    """Wong et al.: delta ~ U(-eta, eta), one FGSM step of size alpha from x + delta, then delta
    is projected to [-eta, eta] and x + delta to [0, 1]."""
    with eval_mode(model):
        x0 = (x + _uniform(x, eta, gen)).clamp(0.0, 1.0)
        return project(x0 + alpha * input_grad(model, x0, y).sign(), x, eta).detach()


def fgsm_rs_objective(eta: float, alpha_ratio: float, seed: int = 0) -> Objective:
    gen = torch.Generator().manual_seed(seed)

    def objective(model, xb, yb):
        return F.cross_entropy(model(fgsm_rs_example(model, xb, yb, eta, alpha_ratio * eta, gen)), yb)

    return objective


def objective_for(defense: str, p, eta: float) -> Objective:
    """The objective of a defense by its pipeline name, from the params (config.Params)."""
    if defense == "pgd-at":
        c = p.pgd_at
        return pgd_at_objective(eta, c.steps, c.step_ratio, c.seed)
    if defense == "trades":
        c = p.trades
        return trades_objective(eta, c.steps, c.step_ratio, c.beta, c.seed)
    if defense == "fgsm-rs":
        c = p.fgsm_rs
        return fgsm_rs_objective(eta, c.alpha_ratio, c.seed)
    raise ValueError(f"unknown defense '{defense}'")
