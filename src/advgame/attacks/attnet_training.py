"""AttNet-curr: a fresh attacker network trained against a frozen defender (Hamm & Mehra,
arXiv 1711.04368, the learning-based attacker of the paper's Table 5).

Objective: the attacker h(x; v) maximises E l(g(z(x; v); u), y) over the training images, with
z = attacks.attnet_example (the one definition of z) and the defender u frozen.

Trained naively (z = clip(x + eta * tanh(h)), cross-entropy) it fails: tanh saturates within an
epoch into one image-independent +-eta pattern and the gradients vanish, and where x + eta tanh(h)
leaves [0, 1] the clip is a dead zone. The remedy (each piece a param of `attacker:`):
- the box form z = lo + (hi - lo) sigmoid(h), lo/hi the eta-box cut to [0, 1]: no dead zone;
- the last layer starts near zero, so h starts near 0, far from saturation;
- a CW margin loss capped at kappa: an image already fooled stops pulling, so the attacker keeps
  learning the images it does not fool yet instead of pushing h of the fooled ones to infinity;
- a penalty relu(|h| - h_bound)^2 that keeps h bounded;
- a cosine lr decay, and the best epoch on held-out training images, with an early stop.
"""
from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advgame.attacks.attnet import attnet, attnet_example, squash
from advgame.attacks.core import LossFn, ce_loss
from advgame.config import AttackerParams, TrainParams
from advgame.models import build_attacker
from advgame.training import LogFn, check_finite, make_optimizer, minibatches, progress

ErrorsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def frozen(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; restores both afterwards."""
    flags, was_training = [p.requires_grad for p in model.parameters()], model.training
    model.eval().requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)


def start_near_zero(attacker: nn.Module, scale: float) -> nn.Module:
    """Scale the last layer's weights (and zero its bias): h starts near 0, off saturation."""
    last = [m for m in attacker.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.zero_()
    return attacker


def margin(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    """Per-example CW margin max_{j != y} g_j - g_y, capped at kappa."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -math.inf).amax(1)
    return (other - true).clamp(max=kappa)


def attack_objective(model: nn.Module, attack_loss: LossFn, z: torch.Tensor, y: torch.Tensor,
                     cfg: AttackerParams) -> torch.Tensor:
    """Per-example loss the attacker ascends. With the margin loss, a defender's custom
    attack_loss (e.g. MagNet's detector penalty) contributes what it adds to cross-entropy."""
    if cfg.loss == "ce":
        return attack_loss(model, z, y)
    logits = model(z)
    loss = margin(logits, y, cfg.kappa)
    if attack_loss is not ce_loss:
        loss = loss + attack_loss(model, z, y) - F.cross_entropy(logits, y, reduction="none")
    return loss


def h_penalty(h: torch.Tensor, bound: float) -> torch.Tensor:
    """mean relu(|h| - bound)^2: zero while h stays in the responsive range."""
    return F.relu(h.abs() - bound).pow(2).mean()


@torch.no_grad()
def diagnostics(attacker: nn.Module, x: torch.Tensor, eta: float) -> dict:
    """Mean |h|, saturated fraction (|tanh h| > 0.99, or sigmoid within 0.005 of 0/1) and the
    perturbation's std across images (per pixel, averaged): ~0 means one universal pattern."""
    attacker.eval()
    h = attacker(x)
    param = getattr(attacker, "param", "tanh")
    sat = (h.abs() > math.atanh(0.99)) if param == "tanh" else (h.abs() > math.log(0.995 / 0.005))
    d = squash(h, x, eta, param) - x
    return {"mean_abs_h": float(h.abs().mean()), "saturated": float(sat.float().mean()),
            "pert_std": float(d.std(0).mean())}


def attack_directions(model: nn.Module, attack_loss: LossFn, x: torch.Tensor, y: torch.Tensor,
                      cfg: AttackerParams, batch: int = 500) -> torch.Tensor:
    """sign of the attack objective's input gradient at the clean images (FGSM's direction)."""
    out = torch.empty_like(x)
    for i in range(0, len(x), batch):
        xb = x[i:i + batch].detach().requires_grad_(True)
        out[i:i + batch] = torch.autograd.grad(attack_objective(model, attack_loss, xb, y[i:i + batch], cfg).sum(),
                                               xb)[0].sign()
    return out


def warm_start(attacker: nn.Module, opt, model: nn.Module, attack_loss: LossFn, x: torch.Tensor,
               y: torch.Tensor, eta: float, cfg: AttackerParams, gen: torch.Generator) -> None:
    """cfg.warmup_epochs of regressing z onto x + warmup_size * eta * (FGSM direction): the
    attacker starts from an image-dependent perturbation instead of finding, from h = 0, the
    universal pattern the attack loss first rewards. The directions are computed once."""
    d = attack_directions(model, attack_loss, x, y, cfg)
    for _ in range(cfg.warmup_epochs):
        for xb, db in minibatches(x, d, cfg.batch, gen):
            target = (xb + cfg.warmup_size * eta * db).clamp(0.0, 1.0)
            loss = F.mse_loss(attnet_example(attacker, xb, eta), target) / eta ** 2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def train_attacker(defender_model: nn.Module, attack_loss: LossFn, x: torch.Tensor, y: torch.Tensor,
                   arch: str, cfg: AttackerParams, eta: float, shape, device="cpu",
                   log: LogFn | None = None, errors: ErrorsFn | None = None, *,
                   val: tuple[torch.Tensor, torch.Tensor]) -> tuple[nn.Module, list[dict]]:
    """A fresh attacker of `arch` trained for at most cfg.epochs to maximise the attack objective
    against the frozen defender on the images x. After each epoch it logs the attack success
    (`errors`, default misclassification) on the validation split `val` (`val`, its fooling rate)
    and the saturation diagnostics; it stops once cfg.patience epochs gain less than cfg.tol
    (`early_stop` on the last epoch), and returns the attacker of the best validation epoch with
    the per-epoch history."""
    torch.manual_seed(cfg.seed)
    attacker = start_near_zero(build_attacker(arch, tuple(shape), cfg.hidden, cfg.width, cfg.param),
                               cfg.init_scale).to(device)
    opt = make_optimizer(TrainParams(optimizer=cfg.optimizer, lr=cfg.lr), attacker.parameters())
    xtr, ytr, xho, yho = x, y, val[0].to(device), val[1].to(device)
    per_epoch = -(-len(xtr) // cfg.batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed)
    if errors is None:
        def errors(xa, ya):
            return defender_model(xa).argmax(1) != ya
    history: list[dict] = []
    best, stale, start = None, 0, time.perf_counter()
    with frozen(defender_model):
        warm_start(attacker, opt, defender_model, attack_loss, xtr.to(device), ytr.to(device), eta, cfg, gen)
        for epoch in range(cfg.epochs):
            attacker.train()
            total, count = 0.0, 0
            desc = f"attacker {arch} epoch {epoch + 1}/{cfg.epochs}"
            for xb, yb in progress(minibatches(xtr, ytr, cfg.batch, gen, device=device), desc, per_epoch):
                h = attacker(xb)
                loss = attack_objective(defender_model, attack_loss, squash(h, xb, eta, cfg.param), yb, cfg).mean()
                v = check_finite(loss, f"attacker {arch} epoch {epoch + 1}")
                opt.zero_grad(set_to_none=True)
                (cfg.penalty * h_penalty(h, cfg.h_bound) - loss).backward()
                opt.step()
                sched.step()
                total, count = total + v * len(xb), count + len(xb)
            success = float(errors(attnet(attacker, xho, eta), yho).float().mean())
            gain = success - (best[0] if best else 0.0)
            if best is None or gain > 0:
                best = (success, copy.deepcopy(attacker.state_dict()))
            stale = 0 if gain >= cfg.tol else stale + 1
            history.append({"train_loss": total / max(count, 1), "val": success,
                            **diagnostics(attacker, xho, eta), "seconds": time.perf_counter() - start,
                            "early_stop": stale >= cfg.patience})
            if log is not None:
                log(history[-1], epoch)
            if stale >= cfg.patience:
                break
    attacker.load_state_dict(best[1])
    attacker.eval()
    return attacker, history


def game_attacker(arch: str, shape, cfg: AttackerParams, model: nn.Module, x: torch.Tensor,
                  y: torch.Tensor, eta: float, lr: float, seed: int, device="cpu") -> nn.Module:
    """The game's opening attacker: the same network, parameterisation and remedy as AttNet-curr
    (near-zero start, then cfg.warmup_epochs regressing onto FGSM examples of the opening
    defender), so that the game starts from an attacker that attacks instead of collapsing to
    one universal pattern. The game itself then ascends the paper's f."""
    torch.manual_seed(seed)
    attacker = start_near_zero(build_attacker(arch, tuple(shape), cfg.hidden, cfg.width, cfg.param),
                               cfg.init_scale).to(device)
    if cfg.warmup_epochs:
        opt = make_optimizer(TrainParams(optimizer=cfg.optimizer, lr=lr), attacker.parameters())
        with frozen(model):
            warm_start(attacker, opt, model, ce_loss, x.to(device), y.to(device), eta, cfg,
                       torch.Generator().manual_seed(seed))
    return attacker
