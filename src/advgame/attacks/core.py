"""What every attack shares: the loss and success signatures, the per-point loss/gradient/
fooled evaluation, batching, the input gradient and the L-inf projection.

Every attack has the call `attack(model, x, y, eta, ...) -> x_adv`: it puts the model in eval
mode (and restores its mode), works in batches, keeps ||x_adv - x||_inf <= eta and clamps pixels
to [0, 1]. `loss` may replace the per-example cross-entropy (e.g. to add a detector penalty).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


SuccessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of the model on x."""
    return F.cross_entropy(model(x), y, reduction="none")


def ce_logits(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


ce_logits.on_logits = True  # type: ignore[attr-defined]  # a loss of the logits, not of the model


def evaluate_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, success: SuccessFn | None,
                   need_grad: bool, target: torch.Tensor | None = None):
    """(per-example loss, its input gradient or None, fooled) at x. With the plain cross-entropy
    or a loss of the logits (`loss.on_logits`), one forward gives both the loss and the
    misclassification check; a `loss.joint` `(x, y, target) -> (loss, fooled)` gives both from
    one pass too (a defender with a detector: adaptive.joint_loss)."""
    if getattr(loss, "joint", False):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(need_grad)
            lv, fooled = loss(xg, y, target)
            g = torch.autograd.grad(lv.sum(), xg)[0] if need_grad else None
        return lv.detach(), g, fooled
    on_logits = getattr(loss, "on_logits", False) or loss is ce_loss
    fn = ce_logits if loss is ce_loss else loss
    with torch.enable_grad():
        xg = x.detach().requires_grad_(need_grad)
        logits = model(xg) if on_logits else None
        lv = fn(logits, y, target) if on_logits else fn(model, xg, y)
        g = torch.autograd.grad(lv.sum(), xg)[0] if need_grad else None
    with torch.no_grad():
        if success is not None:
            fooled = success(x.detach(), y)
        else:
            fooled = (logits if logits is not None else model(x)).argmax(1) != y
    return lv.detach(), g, fooled



def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn = ce_loss) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(model, x, y).sum(), x)
    return g


def project(x_adv: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eta), x + eta).clamp(0.0, 1.0)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """DLR (untargeted): -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3); targeted (target given):
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2). Higher = closer to fooled."""
    s, ind = logits.sort(1)
    zy = logits.gather(1, y[:, None])[:, 0]
    if target is None:
        other = torch.where(ind[:, -1] == y, s[:, -2], s[:, -1])
        return -(zy - other) / (s[:, -1] - s[:, -3] + 1e-12)
    zt = logits.gather(1, target[:, None])[:, 0]
    return -(zy - zt) / (s[:, -1] - 0.5 * (s[:, -3] + s[:, -4]) + 1e-12)


dlr_loss.on_logits = True  # type: ignore[attr-defined]
