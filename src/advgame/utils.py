"""Device choice and seeding."""
from __future__ import annotations

import random

import numpy as np
import torch

from . import UserError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"run.device: '{name}' asked for but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def seed_all(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def setup_torch(threads: int = 0) -> None:
    if threads:
        torch.set_num_threads(threads)
