"""A defender as the evaluation sees it.

`model` maps x -> logits and is differentiable end to end (white-box target). A defender with a
detector (MagNet) also has `reject(x) -> bool tensor` (True = the input is rejected) and a
`classifier` that a grey-box attacker targets instead of the whole pipeline, and `detect(x) ->
(logits, scores)`: the logits and every detector's score from one pass (an input is rejected
when any score exceeds its entry of `thresholds`), which adaptive attacks differentiate.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from advgame.attacks.core import LossFn, ce_loss
from advgame.models import eval_mode, predict


@dataclass
class Defender:
    name: str
    model: nn.Module
    classifier: nn.Module
    reject: Callable[[torch.Tensor], torch.Tensor] | None = None
    # white-box loss for gradient attacks; a detector-aware defender penalises being detected
    attack_loss: LossFn = ce_loss
    meta: dict | None = None
    detect: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    thresholds: list[float] | None = None

    def to(self, device) -> "Defender":
        self.model.to(device)
        self.classifier.to(device)
        return self

    @torch.no_grad()
    def errors(self, x: torch.Tensor, y: torch.Tensor, clean: bool, batch: int = 1000) -> torch.Tensor:
        """Per-example error (bool). A rejected clean input is an error; a rejected adversarial
        input counts as defended."""
        wrong, rejected = self.outcome(x, y, batch)
        if rejected is None:
            return wrong
        return (wrong | rejected) if clean else (wrong & ~rejected)

    @torch.no_grad()
    def outcome(self, x: torch.Tensor, y: torch.Tensor, batch: int = 1000):
        """(misclassified, rejected or None without a detector), per example; with `detect`
        both come from one pass of the reformer."""
        if self.reject is None:
            return predict(self.model, x, batch) != y, None
        if self.detect is None:
            with eval_mode(self.model):
                rejected = torch.cat([self.reject(x[i:i + batch]) for i in range(0, len(x), batch)])
            return predict(self.model, x, batch) != y, rejected
        thr = torch.tensor(self.thresholds, device=x.device)
        wrong, rejected = [], []
        with eval_mode(self.model):
            for i in range(0, len(x), batch):
                logits, scores = self.detect(x[i:i + batch])
                wrong.append(logits.argmax(1) != y[i:i + batch])
                rejected.append((scores > thr).any(1))
        if not wrong:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            return empty, empty
        return torch.cat(wrong), torch.cat(rejected)


def success_of(defender: Defender):
    """With a detector, an attack succeeds when the input is misclassified and not rejected."""
    return None if defender.reject is None else (
        lambda xa, ya: defender.errors(xa, ya, clean=False, batch=len(xa)))


@dataclass
class Call:
    """One attack's run in the evaluation: the images of one defender at one eta. `plan` is the
    evaluation's settings (evaluation/crosseval.py's Plan: steps, iterations, queries, batch,
    the models of the FGSM-k, AttNet and transfer columns); `member` the family member (round k,
    attacker architecture, ART attack) or None; `pool` every evaluated image and label (x may be
    the part a smaller eta left unfooled), where an attack starts from other images
    (pgd-adaptive's guided starts). Each attack's `run_*(call)` returns x_adv."""

    defender: Defender
    x: torch.Tensor
    y: torch.Tensor
    eta: float
    plan: object
    seed: int = 0
    member: object = None
    pool: tuple[torch.Tensor, torch.Tensor] | None = None
