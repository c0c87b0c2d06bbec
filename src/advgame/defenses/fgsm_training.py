"""Online FGSM adversarial training (fgsm-at) and Sens-FGSM: two objectives for `training.fit`.

Both minimise  (1 - a) l(g(x; u), y) + a l(g(z(u); u), y)  with the FGSM example
z(u) = clip(x + eta * sign(grad_x l(g(x; u), y)), 0, 1) regenerated against the current
parameters u every minibatch. They differ only in the gradient with respect to u:

- fgsm-at treats z as a constant (Goodfellow et al. 2015);
- sens-fgsm also differentiates through z (double backprop). sign has zero derivative almost
  everywhere, so the backward pass uses the derivative of eta * tanh(grad_x l / tau) while the
  forward pass keeps the exact sign step (straight-through). With the surrogate off the sign's
  own (zero) derivative is used and the gradient reduces to fgsm-at's.

grad_x l is the per-example input gradient (the summed loss, not the batch mean), so the scale
that tau is compared with does not depend on the batch size. The clip to [0, 1] stays in the
graph as it is: a pixel pushed outside [0, 1] by the exact step is clipped and passes no
sensitivity back, which is the true derivative of the forward pass that is actually used.

The input gradient is taken inside the objective, in whatever mode `fit` left the model in
(train). The classifiers here have no dropout, so it is the same gradient an eval-mode FGSM
would take; a model with batch norm would see its statistics updated by the adversarial batch,
as in the usual adversarial training loops.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advgame.training import Objective

StepFn = Callable[[torch.Tensor], torch.Tensor]


def _adversarial_objective(eta: float, a: float, step: StepFn, create_graph: bool) -> Objective:
    """(1 - a) CE(g(x)) + a CE(g(clip(x + step(grad_x l), 0, 1))); with create_graph the input
    gradient stays in the graph, so the loss is differentiated through the perturbation."""

    def objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        x = xb.detach().requires_grad_(True)
        logits = model(x)  # shared by the clean loss and the input gradient
        (gx,) = torch.autograd.grad(F.cross_entropy(logits, yb, reduction="sum"), x,
                                    create_graph=create_graph, retain_graph=True)
        z = (xb + step(gx)).clamp(0.0, 1.0)
        return (1 - a) * F.cross_entropy(logits, yb) + a * F.cross_entropy(model(z), yb)

    return objective


def fgsm_at_objective(eta: float, a: float) -> Objective:
    """Online FGSM adversarial training: the FGSM example is a constant of the parameters."""
    return _adversarial_objective(eta, a, lambda g: eta * g.sign(), create_graph=False)


def sign_step(eta: float, tau: float, surrogate: bool = True) -> StepFn:
    """The FGSM step eta * sign(g); with the surrogate, its backward is that of eta * tanh(g / tau).
    s - s.detach() is exactly zero in the forward pass, so the step's value is exactly the sign step."""

    def step(g: torch.Tensor) -> torch.Tensor:
        exact = eta * g.sign()  # sign's derivative is zero: without the surrogate nothing flows back
        if not surrogate:
            return exact
        s = eta * torch.tanh(g / tau)
        return exact + (s - s.detach())

    return step


def sens_fgsm_objective(eta: float, a: float, tau: float, surrogate: bool = True) -> Objective:
    """Sens-FGSM: the fgsm-at loss, differentiated through the FGSM perturbation (straight-through
    tanh surrogate of sign at temperature tau)."""
    return _adversarial_objective(eta, a, sign_step(eta, tau, surrogate), create_graph=True)


def smooth_sens_objective(eta: float, a: float, tau: float) -> Objective:
    """Reference for tests: the step is eta * tanh(grad_x l / tau) in the forward pass too, so the
    whole objective is smooth and its gradient can be checked by finite differences."""
    return _adversarial_objective(eta, a, lambda g: eta * torch.tanh(g / tau), create_graph=True)
