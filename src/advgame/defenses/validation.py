"""The validation split's criteria: what every trained model's early stop and best epoch are
chosen by (docs/protocol.md, section 4). The split is cut from the training images by
`data.seed` (data.prepare); no criterion ever sees a test image.

- clean error: the baseline and the cat-and-mouse rounds (STUDY.md: "rounds' clean part");
- robust error under a fixed validation PGD (VAL_PGD_STEPS steps of 2.5 * eta / steps, one
  random start of a fixed seed), ties broken by clean error: every robust training (fgsm-at,
  sens-fgsm and its ablations, pgd-at, trades, fgsm-rs; for fgsm-rs this is Wong et al.'s early
  stop against catastrophic overfitting);
- fooling rate: the attacker networks (attacks/attnet_training.py, higher is better);
- reconstruction error: MagNet's reformer (its own objective; it has no classifier to attack);
- the game defenders (alt, minimax, maximin): their game's value as an error (clean_weight *
  clean + the rest * error against the co-trained attacker), logged every epoch but never used
  to stop, since the co-trained attacker moves with it (defenses/game.py): every game runs its
  epochs and reports itself at the cap.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from advgame.training import error_rate

VAL_PGD_STEPS, VAL_PGD_RATIO, VAL_PGD_SEED = 20, 2.5, 0
CLEAN = "clean error"
ROBUST = f"PGD-{VAL_PGD_STEPS} error"
RECON = "reconstruction L1"
FOOLING = "fooling rate"
GAME = "error vs the co-trained attacker (no early stop)"


def clean_criterion(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor) -> Callable[[], float]:
    return lambda: error_rate(model, xv, yv)


def robust_error(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor, eta: float) -> float:
    """The fixed validation PGD's error (also what a stage reports of the chosen model)."""
    from advgame.attacks.pgd import pgd

    xa = pgd(model, xv, yv, eta, steps=VAL_PGD_STEPS, step_size=VAL_PGD_RATIO * eta / VAL_PGD_STEPS,
             seed=VAL_PGD_SEED)
    return error_rate(model, xa, yv)


def robust_criterion(model: nn.Module, xv: torch.Tensor, yv: torch.Tensor,
                     eta: float) -> Callable[[], tuple[float, float]]:
    return lambda: (robust_error(model, xv, yv, eta), error_rate(model, xv, yv))
