"""Training loops and the standard objective. Defense objectives live beside it
(catmouse.py, fgsm_training.py, game.py, field.py, magnet.py) and plug into `fit`.

An objective is `objective(model, xb, yb) -> scalar loss tensor` (it may generate adversarial
examples inside, against the current parameters). `fit` runs the plain loop a reader can hold
in their head: shuffle, minibatch, step, check the loss is finite, log per epoch.
"""
from __future__ import annotations

import copy
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
        max_loss: float = math.inf, validate: Callable[[], float | tuple[float, float]] | None = None) -> list[dict]:
    """Train `model` in place for at most cfg.epochs; returns the per-epoch metrics it logged.

    With `validate` (the model's criterion on the validation split, lower is better; a pair is
    (criterion, tie-break)) each epoch logs `val` (and `val_tiebreak`), training stops once
    cfg.patience epochs in a row brought no gain (a new best that is also at least cfg.min_gain,
    a fraction, below the value of the last gain) and marks that epoch `early_stop`; the model
    ends at its best-validation epoch (exact ties keep the earlier one). No test image is ever looked at."""
    model.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(cfg, model.parameters())
    history = []
    nb = math.ceil(len(x) / cfg.batch)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * nb)
             if cfg.schedule == "cosine" else None)
    best = None  # (val, epoch index, state)
    gain = None  # (val, epoch index) of the last gain
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
            if validate is not None:
                model.eval()
                score = validate()
                score = tuple(float(v) for v in score) if isinstance(score, tuple) else (float(score),)
                metrics["val"] = score[0]
                if len(score) > 1:
                    metrics["val_tiebreak"] = score[1]
                if best is None or score < best[0]:
                    if gain is None or score[0] <= gain[0] - cfg.min_gain * abs(gain[0]):
                        gain = (score[0], epoch)
                    best = (score, epoch, copy.deepcopy(model.state_dict()))
            history.append(metrics)
            if log is not None:
                log(metrics, epoch)
            if gain is not None and epoch - gain[1] >= cfg.patience:
                metrics["early_stop"] = True
                break
    if best is not None:
        model.load_state_dict(best[2])
    model.eval()
    return history


def training_record(history: list[dict], cap: int, criterion: str, key: str = "val",
                    higher_is_better: bool = False, keep_last: bool = False) -> dict:
    """What a stage reports of one model's training (results.json's `training`): epochs run, the
    best-validation epoch (1-based), `capped` (the epoch cap, not the early stop, ended it: the
    last epoch is the cap's and not marked `early_stop` by `fit` or the attacker's own loop), the
    best validation value, the criterion's name and the validation curve. A loop without a stop
    (`keep_last`: the game) keeps its last epoch and is capped once it ran them all."""
    curve = [round(float(h[key]), 6) for h in history]
    sign = -1 if higher_is_better else 1
    ranks = [(sign * v, h.get(f"{key}_tiebreak", 0.0), i) for i, (v, h) in enumerate(zip(curve, history))]
    best = (len(curve) - 1 if keep_last else min(ranks)[2]) if ranks else -1
    return {"criterion": criterion, "epochs": len(curve), "cap": cap, "best_epoch": best + 1,
            "capped": len(curve) >= cap and not (history and history[-1].get("early_stop")),
            "val": curve[best] if curve else None, "curve": curve}


def mixed_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, xa: torch.Tensor, a: float,
                batch: int = 1000) -> float:
    """(1 - a) clean error + a error on the adversarial examples xa: the error form of a
    `(1 - a) l(x) + a l(z)` objective, the validation criterion of such a defense."""
    clean = error_rate(model, x, y, batch) if a < 1 else 0.0
    return (1 - a) * clean + a * error_rate(model, xa, y, batch)


@torch.no_grad()
def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    from advgame.models import predict

    return float((predict(model, x, batch) != y).float().mean()) if len(x) else float("nan")
