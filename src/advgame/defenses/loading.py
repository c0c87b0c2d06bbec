"""Load a defender from its checkpoint: the checkpoint's `kind` (the registry's `kind` of the
defense that wrote it) picks the loader. Imports run one way: this module imports the defenses'
loaders, they import only `Defender` (advgame.attacks.target)."""
from __future__ import annotations

from typing import Callable

import torch

from advgame import UserError
from advgame.artifacts import load_checkpoint
from advgame.attacks.target import Defender
from advgame.defenses.magnet import defender_from_checkpoint as magnet_defender
from advgame.models import model_from_checkpoint

__all__ = ["Defender", "LOADERS", "load_defender"]


def classifier_defender(name: str, ckpt: dict) -> Defender:
    m = model_from_checkpoint(ckpt, "classifier").eval()
    return Defender(name=name, model=m, classifier=m, meta=ckpt["meta"])


LOADERS: dict[str, Callable[[str, dict], Defender]] = {"classifier": classifier_defender,
                                                       "magnet": magnet_defender}


def load_defender(name: str, path: str, device: torch.device | str = "cpu") -> Defender:
    ckpt = load_checkpoint(path)
    kind = ckpt["meta"].get("kind", "classifier")
    if kind not in LOADERS:  # an attacker (or unknown) checkpoint: say which kind it is, in one line
        model_from_checkpoint(ckpt, "classifier")
        raise UserError(f"{path}: checkpoint kind '{kind}' has no loader (known: {', '.join(LOADERS)}); "
                        "rerun the stage that trains it")
    return LOADERS[kind](name, ckpt).to(device)
