"""Training loops and the standard objective. Defense objectives live beside it
(catmouse.py, fgsm_training.py, game.py, field.py, magnet.py) and plug into `fit`.

An objective is `objective(model, xb, yb) -> scalar loss tensor` (it may generate adversarial
examples inside, against the current parameters). `fit` runs the plain loop a reader can hold
in their head: shuffle, minibatch, step, check the loss is finite, log per epoch.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from advgame import UserError
from advgame.config import TrainParams
from advgame.progress import Progress

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
LogFn = Callable[[dict, int], None]


class TrainingDiverged(UserError):
    """The loss became NaN/inf or exceeded its bound: nothing is saved."""


def make_optimizer(cfg: TrainParams, parameters: Iterable[torch.nn.Parameter], lr: float | None = None):
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=cfg.weight_decay)


def minibatches(x: torch.Tensor, y: torch.Tensor, batch: int, gen: torch.Generator | None = None,
                shuffle: bool = True, device: torch.device | str | None = None) -> Iterator[tuple]:
    """Yield (xb, yb) on `device`; the permutation is drawn on the CPU from `gen` (reproducible)."""
    idx = torch.randperm(len(x), generator=gen) if shuffle else torch.arange(len(x))
    for i in range(0, len(x), batch):
        j = idx[i:i + batch]
        yield x[j].to(device), y[j].to(device)


def check_finite(loss: torch.Tensor | float, where: str, max_loss: float = math.inf) -> float:
    v = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
    if not math.isfinite(v) or v > max_loss:
        raise TrainingDiverged(
            f"{where}: training diverged (loss={v:.4g}); nothing was saved. "
            "Lower the learning rate or check the params"
        )
    return v


def standard_objective(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(xb), yb)


def progress(iterable, desc: str, total: int | None = None) -> Progress:
    """Count, total and ETA of a loop: a bar in a terminal, a plain line every few seconds in a
    log file (see advgame.progress). Yields the iterable's items unchanged."""
    return Progress(iterable, desc, total)


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective, cfg: TrainParams,
        device: torch.device | str = "cpu", log: LogFn | None = None, desc: str = "train",
        max_loss: float = math.inf, on_epoch: Callable[[int], dict] | None = None) -> list[dict]:
    """Train `model` in place for cfg.epochs; returns the per-epoch metrics it logged."""
    model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(cfg, model.parameters())
    history = []
    nb = math.ceil(len(x) / cfg.batch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * nb)
             if cfg.schedule == "cosine" else None)
    with Progress(desc=desc, total=cfg.epochs * nb) as bar:  # one ETA for the whole fit
        for epoch in range(cfg.epochs):
            model.train()
            bar.set_postfix_str(f"epoch {epoch + 1}/{cfg.epochs}")
            total, count = 0.0, 0
            for xb, yb in minibatches(x, y, cfg.batch, gen, device=device):
                loss = objective(model, xb, yb)
                v = check_finite(loss, f"{desc} epoch {epoch + 1}", max_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                total, count = total + v * len(xb), count + len(xb)
                bar.update(1)
            metrics = {"train_loss": total / max(count, 1)}
            if on_epoch is not None:
                metrics.update(on_epoch(epoch))
            history.append(metrics)
            if log is not None:
                log(metrics, epoch)
    model.eval()
    return history


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    from advgame.models import predict

    return float((predict(model, x, batch) != y).float().mean()) if len(x) else float("nan")
