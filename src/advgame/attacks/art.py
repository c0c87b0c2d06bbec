"""The independent check: APGD-CE, APGD-DLR and Square from the adversarial-robustness-toolbox
(ART), a library we did not write, run against a defender's end-to-end model."""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from advgame.attack_table import get
from advgame.attacks.target import Call


def _classifier(model: nn.Module, x: torch.Tensor, classes: int, device: torch.device):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model.eval(), loss=nn.CrossEntropyLoss(),
                             input_shape=tuple(x.shape[1:]), nb_classes=classes,
                             clip_values=(0.0, 1.0),
                             device_type="gpu" if device.type == "cuda" else "cpu")


def art_attack(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float,
               classes: int, apgd_iters: int = 100, square_queries: int = 1000, seed: int = 0,
               batch: int = 500) -> torch.Tensor:
    """Run one ART attack; returns x_adv on x's device (within eta of x, pixels in [0, 1])."""
    from art.attacks.evasion import AutoProjectedGradientDescent, SquareAttack

    logging.getLogger("art").setLevel(logging.ERROR)
    device = x.device
    clf = _classifier(model, x, classes, device)
    np.random.seed(seed)  # Square and APGD's random init draw from numpy's global state
    torch.manual_seed(seed)
    if name in ("apgd-ce", "apgd-dlr"):
        attack = AutoProjectedGradientDescent(
            clf, norm=np.inf, eps=eta, eps_step=2 * eta, max_iter=apgd_iters, targeted=False,
            nb_random_init=1, batch_size=batch, verbose=False,
            loss_type="cross_entropy" if name == "apgd-ce" else "difference_logits_ratio")
    elif name == "square":
        attack = SquareAttack(clf, norm=np.inf, eps=eta, max_iter=square_queries, nb_restarts=1,
                              batch_size=batch, verbose=False)
    else:
        raise ValueError(f"unknown ART attack {name}; allowed: {', '.join(get('art:{}').choices)}")
    x_np = x.detach().cpu().numpy()
    adv = attack.generate(x=x_np, y=y.cpu().numpy())
    adv = torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(device)
    # ART works in float32 numpy; re-project so rounding can never leave the budget
    return torch.min(torch.max(adv, x - eta), x + eta).clamp(0.0, 1.0)


def run(c: Call) -> torch.Tensor:
    """The ART attack named by the member, on the defender's end-to-end model."""
    p = c.plan
    return art_attack(c.member, c.defender.model, c.x, c.y, c.eta, p.classes, p.art_apgd_iters,
                      p.art_square_queries, seed=c.seed, batch=p.batch)
