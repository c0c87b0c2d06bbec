"""A defender as the evaluation sees it, loaded from its checkpoint.

`model` maps x -> logits and is differentiable end to end (white-box target). A defender with a
detector (MagNet) also has `reject(x) -> bool tensor` (True = the input is rejected) and a
`classifier` that a grey-box attacker targets instead of the whole pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .artifacts import load_checkpoint
from .attacks import LossFn, ce_loss, eval_mode, predict
from .models import model_from_checkpoint


@dataclass
class Defender:
    name: str
    model: nn.Module
    classifier: nn.Module
    reject: Callable[[torch.Tensor], torch.Tensor] | None = None
    # white-box loss for gradient attacks; a detector-aware defender penalises being detected
    attack_loss: LossFn = ce_loss
    meta: dict | None = None

    def to(self, device) -> "Defender":
        self.model.to(device)
        self.classifier.to(device)
        return self

    @torch.no_grad()
    def errors(self, x: torch.Tensor, y: torch.Tensor, clean: bool, batch: int = 1000) -> torch.Tensor:
        """Per-example error (bool). A rejected clean input is an error; a rejected adversarial
        input counts as defended."""
        wrong = predict(self.model, x, batch) != y
        if self.reject is None:
            return wrong
        with eval_mode(self.model):
            rejected = torch.cat([self.reject(x[i:i + batch]) for i in range(0, len(x), batch)])
        return (wrong | rejected) if clean else (wrong & ~rejected)


def load_defender(name: str, path: str, device: torch.device | str = "cpu") -> Defender:
    ckpt = load_checkpoint(path)
    kind = ckpt["meta"].get("kind", "classifier")
    if kind == "magnet":
        from .magnet import defender_from_checkpoint

        return defender_from_checkpoint(name, ckpt).to(device)
    m = model_from_checkpoint(ckpt, "classifier").to(device).eval()
    return Defender(name=name, model=m, classifier=m, meta=ckpt["meta"])
