"""FGSM, the fast gradient sign method (Goodfellow et al. 2015, "Explaining and Harnessing
Adversarial Examples", ICLR): one step of eta * sign(grad_x loss)."""

from __future__ import annotations

import torch
from torch import nn

from advgame.attacks.core import LossFn, ce_loss, input_grad
from advgame.attacks.target import Call
from advgame.models import batch_slices, eval_mode


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, batch: int = 1000,
         loss: LossFn = ce_loss) -> torch.Tensor:
    """FGSM(x; u) = clip(x + eta * sign(grad_x l(g(x; u), y)), 0, 1)."""
    out = torch.empty_like(x)
    with eval_mode(model):
        for s in batch_slices(len(x), batch):
            g = input_grad(model, x[s], y[s], loss)
            out[s] = (x[s] + eta * g.sign()).clamp(0.0, 1.0)
    return out


def run_source(c: Call) -> torch.Tensor:
    """FGSM-k: FGSM crafted on u_(k-1) (the member k's source) and applied to the defender."""
    return fgsm(c.plan.fgsm_sources[c.member], c.x, c.y, c.eta, c.plan.batch)


def run_curr(c: Call) -> torch.Tensor:
    """FGSM-curr: FGSM on the defender itself, with its white-box loss."""
    return fgsm(c.defender.model, c.x, c.y, c.eta, c.plan.batch, c.defender.attack_loss)


def run_grey(c: Call) -> torch.Tensor:
    """Grey-box FGSM: on the bare classifier behind a detector."""
    return fgsm(c.defender.classifier, c.x, c.y, c.eta, c.plan.batch)
