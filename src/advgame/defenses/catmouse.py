"""The cat-and-mouse game (paper section 2, Figure 1): FGSM retraining, round after round.

Round k: the FGSM-k examples of the training set are made ONCE against u_(k-1) and then held
fixed; u_k is u_(k-1) fine-tuned on the clean + FGSM-k mixture with the loss
`(1 - a) l(g(x)) + a l(g(z_k))`. u_k then faces its own attack FGSM-k (low error expected) and
the next one, FGSM-(k+1) = FGSM against u_k itself (high error expected).
"""
from __future__ import annotations

import copy
import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advgame.artifacts import atomic_path
from advgame.attacks.fgsm import fgsm
from advgame.config import CatMouseParams
from advgame.models import predict
from advgame.training import LogFn, Objective, error_rate, fit


def round_loss(model: nn.Module, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor, a: float) -> torch.Tensor:
    """(1 - a) l(g(x)) + a l(g(z)): x clean, z its fixed FGSM-k example."""
    return (1 - a) * F.cross_entropy(model(x), y) + a * F.cross_entropy(model(z), y)


def round_objective(a: float) -> Objective:
    """An objective for training.fit on pairs stacked as (N, 2, C, H, W): [:, 0] clean, [:, 1]
    FGSM-k. Stacking keeps each clean image with its own adversarial example through fit's
    shuffling."""
    def objective(model: nn.Module, pair: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return round_loss(model, pair[:, 0], pair[:, 1], y, a)

    return objective


def play_round(prev_model: nn.Module, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor,
               yt: torch.Tensor, eta: float, cfg: CatMouseParams, device: torch.device | str = "cpu",
               log: LogFn | None = None, batch: int = 256, desc: str = "round",
               val: tuple[torch.Tensor, torch.Tensor] | None = None):
    """One round: returns (u_k, metrics, FGSM-k test examples, per-epoch history). `prev_model`
    is left untouched. With `val` (the validation split) the round stops early on its clean
    validation error and keeps the best epoch (training.fit). `batch` only chunks the attacks and
    evaluations: 256 runs about twice as fast on a CPU as 1000 (whose activations fall out of
    cache).

    metrics: "clean" error on the clean test set, "own_attack" error on FGSM-k (made against
    u_(k-1)), "next_attack" error on FGSM-(k+1) (made against u_k)."""
    prev_model = prev_model.to(device).eval()
    x, y, xt, yt = x.to(device), y.to(device), xt.to(device), yt.to(device)
    z = fgsm(prev_model, x, y, eta, batch)
    z_test = fgsm(prev_model, xt, yt, eta, batch)
    model = copy.deepcopy(prev_model)
    validate = None
    if val is not None:
        xv, yv = val[0].to(device), val[1].to(device)
        validate = lambda: error_rate(model, xv, yv, batch)  # noqa: E731
    hist = fit(model, torch.stack([x, z], dim=1), y, round_objective(cfg.a), cfg, device, log=log,
               desc=desc, validate=validate)
    metrics = {"clean": error_rate(model, xt, yt, batch), "own_attack": error_rate(model, z_test, yt, batch),
               "next_attack": error_rate(model, fgsm(model, xt, yt, eta, batch), yt, batch)}
    return model, metrics, z_test, hist


@torch.no_grad()
def attack_matrix(models: dict, attacks: dict, yt: torch.Tensor, batch: int = 1000) -> list[list[float]]:
    """error[r][c] of models (rows, in dict order) on attack examples (columns, in dict order)."""
    out = []
    for m in models.values():
        out.append([float((predict(m, xa, batch) != yt.to(xa.device)).float().mean())
                    for xa in attacks.values()])
    return out


# ------------------------------------------------------------------------------ outputs

CURVE_COLUMNS = ("k", "clean", "own_attack", "next_attack")


def write_curve_csv(rows: list[dict], path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
