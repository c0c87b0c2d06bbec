"""The attacker-network example z(x; v) (Hamm & Mehra, arXiv 1711.04368): the attacker's
output squashed into the eta-ball (tanh, the paper's, or a box parameterisation)."""

from __future__ import annotations

import torch
from torch import nn

from advgame.attacks.target import Call
from advgame.models import batch_slices, eval_mode

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
        for s in batch_slices(len(x), batch):
            out[s] = attnet_example(attacker, x[s], eta)
    return out


def run_curr(c: Call) -> torch.Tensor:
    """AttNet-curr: the defender's own attacker network of the member architecture."""
    return attnet(c.plan.own_attackers[c.member], c.x, c.eta, c.plan.batch)
