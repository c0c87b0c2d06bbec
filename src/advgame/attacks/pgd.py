"""PGD, projected gradient descent with a random start (Madry et al. 2018, "Towards Deep
Learning Models Resistant to Adversarial Attacks", ICLR), L-inf, with restarts and a per-image
early stop (each image keeps its first fooling iterate)."""

from __future__ import annotations

import math

import torch
from torch import nn

from advgame.attacks.core import (
    LossFn,
    SuccessFn,
    ce_loss,
    evaluate_point,
    project,
)
from advgame.attacks.target import Call, success_of
from advgame.models import batch_slices, eval_mode


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int = 40,
        step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        seed: int = 0, batch: int = 1000, loss: LossFn = ce_loss,
        success: SuccessFn | None = None, early_stop: bool = True) -> torch.Tensor:
    """Madry's L-inf PGD with random start.

    Per restart an example keeps the first iterate that fools the defender (`success(x_adv, y)
    -> bool`, default: misclassified; e.g. "misclassified and not detected" for a defender with
    a detector), else its highest-loss iterate; fooled examples leave the batch (`early_stop`)
    and skip later restarts. Over restarts: a fooled example if one was found, else the highest
    loss. The random starts are drawn for all of x from one generator seeded once, so the result
    does not depend on `batch`."""
    step_size = 2.5 * eta / steps if step_size is None else step_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    with eval_mode(model):
        for _ in range(restarts):
            noise = (torch.empty(x.shape).uniform_(-eta, eta, generator=gen).to(x.device)
                     if random_start else torch.zeros_like(x))
            todo = (~fooled).nonzero().flatten()
            for s in batch_slices(len(todo), batch):
                i = todo[s]
                xa, f, lv = _pgd_run(model, x[i], y[i], (x[i] + noise[i]).clamp(0.0, 1.0), eta, steps,
                                     step_size, loss, success, early_stop)
                better = f | (lv > best_loss[i])
                j = i[better]
                best[j], best_loss[j], fooled[j] = xa[better], lv[better], f[better]
    return best


def _pgd_run(model, x, y, x0, eta, steps, step_size, loss, success, early_stop):
    """One PGD run on one batch; returns (x_out, fooled, loss of x_out)."""
    x_cur, out = x0.clone(), x0.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    act = torch.arange(len(x), device=x.device)
    for k in range(steps + 1):
        lv, g, fooled = evaluate_point(model, x_cur[act], y[act], loss, success, need_grad=k < steps)
        keep = (fooled & ~done[act]) | (~done[act] & (lv > best_loss[act]))
        i = act[keep]
        out[i], best_loss[i] = x_cur[i], lv[keep]
        done[act[fooled]] = True
        if early_stop:
            live = ~fooled
            act, g = act[live], g[live] if g is not None else None
        if k == steps or len(act) == 0:
            break
        x_cur[act] = project(x_cur[act] + step_size * g.sign(), x[act], eta)
    return out, done, best_loss


def _plan_pgd(c: Call, model: nn.Module, loss: LossFn, success, early_stop: bool = True) -> torch.Tensor:
    p = c.plan
    return pgd(model, c.x, c.y, c.eta, steps=p.pgd_steps, step_size=p.pgd_step_ratio * c.eta / p.pgd_steps,
               restarts=p.pgd_restarts, seed=c.seed, batch=p.batch, loss=loss, success=success,
               early_stop=early_stop)


def run_curr(c: Call) -> torch.Tensor:
    """PGD-curr: on the defender itself, with its white-box loss (a detector-aware loss may come
    with a form that gives loss and success from one pass)."""
    loss = c.defender.attack_loss
    return _plan_pgd(c, c.defender.model, getattr(loss, "joint_version", loss), success_of(c.defender))


def run_grey(c: Call) -> torch.Tensor:
    """Grey-box PGD: cross-entropy of the bare classifier, success judged on the whole defense."""
    return _plan_pgd(c, c.defender.classifier, ce_loss, success_of(c.defender))


def run_transfer(c: Call) -> torch.Tensor:
    """PGD on the undefended baseline, all steps (no early stop: a confident example transfers
    better), applied to the defender."""
    return _plan_pgd(c, c.plan.transfer_source, ce_loss, None, early_stop=False)
