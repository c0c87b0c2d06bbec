"""L-inf attacks: FGSM, PGD and the attacker-network example. Pure functions on tensors.

Every attack has the call `attack(model, x, y, eta, ...) -> x_adv`: it puts the model in eval
mode (and restores its mode), works in batches, keeps ||x_adv - x||_inf <= eta and clamps pixels
to [0, 1]. `loss` may replace the per-example cross-entropy (e.g. to add a detector penalty).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
SuccessFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ce_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of the model on x."""
    return F.cross_entropy(model(x), y, reduction="none")


def ce_logits(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


ce_logits.on_logits = True  # type: ignore[attr-defined]  # a loss of the logits, not of the model


def evaluate_point(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, success: SuccessFn | None,
                   need_grad: bool, target: torch.Tensor | None = None):
    """(per-example loss, its input gradient or None, fooled) at x. With the plain cross-entropy
    or a loss of the logits (`loss.on_logits`), one forward gives both the loss and the
    misclassification check; a `loss.joint` `(x, y, target) -> (loss, fooled)` gives both from
    one pass too (a defender with a detector: adaptive.joint_loss)."""
    if getattr(loss, "joint", False):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(need_grad)
            lv, fooled = loss(xg, y, target)
            g = torch.autograd.grad(lv.sum(), xg)[0] if need_grad else None
        return lv.detach(), g, fooled
    on_logits = getattr(loss, "on_logits", False) or loss is ce_loss
    fn = ce_logits if loss is ce_loss else loss
    with torch.enable_grad():
        xg = x.detach().requires_grad_(need_grad)
        logits = model(xg) if on_logits else None
        lv = fn(logits, y, target) if on_logits else fn(model, xg, y)
        g = torch.autograd.grad(lv.sum(), xg)[0] if need_grad else None
    with torch.no_grad():
        if success is not None:
            fooled = success(x.detach(), y)
        else:
            fooled = (logits if logits is not None else model(x)).argmax(1) != y
    return lv.detach(), g, fooled


@contextmanager
def eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _batches(n: int, batch: int):
    for i in range(0, n, batch):
        yield slice(i, min(i + batch, n))


def input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: LossFn = ce_loss) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(model, x, y).sum(), x)
    return g


def project(x_adv: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
    return torch.min(torch.max(x_adv, x - eta), x + eta).clamp(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, batch: int = 1000,
         loss: LossFn = ce_loss) -> torch.Tensor:
    """FGSM(x; u) = clip(x + eta * sign(grad_x l(g(x; u), y)), 0, 1)."""
    out = torch.empty_like(x)
    with eval_mode(model):
        for s in _batches(len(x), batch):
            g = input_grad(model, x[s], y[s], loss)
            out[s] = (x[s] + eta * g.sign()).clamp(0.0, 1.0)
    return out


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
            for s in _batches(len(todo), batch):
                i = todo[s]
                xa, f, lv = _pgd_run(model, x[i], y[i], (x[i] + noise[i]).clamp(0.0, 1.0), eta, steps,
                                     step_size, loss, success, early_stop)
                better = f | (lv > best_loss[i])
                j = i[better]
                best[j], best_loss[j], fooled[j] = xa[better], lv[better], f[better]
    return best


PARAMS = ("tanh", "box")


def squash(h: torch.Tensor, x: torch.Tensor, eta: float, param: str = "tanh") -> torch.Tensor:
    """z from the attacker's pre-activation h; within the budget and [0, 1] by construction.

    tanh (the paper's): clip(x + eta * tanh(h), 0, 1); where x + eta * tanh(h) leaves [0, 1] the
    clip is a dead zone (zero gradient). box: lo + (hi - lo) * sigmoid(h) with lo = max(0, x - eta),
    hi = min(1, x + eta): the same set of examples, reached without a dead zone."""
    if param == "box":
        lo, hi = (x - eta).clamp(min=0.0), (x + eta).clamp(max=1.0)
        return lo + (hi - lo) * torch.sigmoid(h)
    if param == "tanh":
        return (x + eta * torch.tanh(h)).clamp(0.0, 1.0)
    raise ValueError(f"attacker parameterisation: unknown '{param}'; allowed values: {', '.join(PARAMS)}")


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


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, queries: int = 1000,
           p_init: float = 0.8, seed: int = 0, batch: int = 1000,
           success: SuccessFn | None = None, objective=None) -> torch.Tensor:
    """Square attack, L-inf (Andriushchenko et al. 2020, arXiv 1912.00049): black-box random
    search on the margin loss. Start from vertical stripes of +-eta; each query sets a random
    square (side from the p schedule of the paper, on the scale of 10,000 queries) to +-eta per
    channel and keeps it if the margin drops. Fooled examples stop querying. Unlike the
    reference code, the square's place and signs are drawn per example, for all of x at every
    query from one generator, so the result does not depend on `batch`. `objective(x, y) ->
    (margin, fooled)` replaces the margin and `success` (one pass; e.g. adaptive.joint_margin)."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = x.shape
    view = (-1, 1, 1, 1)
    out = torch.empty_like(x)
    stripes = torch.randint(0, 2, (n, c, 1, w), generator=gen).to(x) * 2 - 1
    draws = []
    for q in range(queries):
        side = max(int(round(math.sqrt(_p_square(q, queries, p_init) * h * w))), 1)
        side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
        draws.append((side, torch.randint(0, h - side + 1, (n,), generator=gen),
                      torch.randint(0, w - side + 1, (n,), generator=gen),
                      torch.randint(0, 2, (n, c, 1, 1), generator=gen) * 2 - 1))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    with eval_mode(model), torch.no_grad():
        for s in _batches(n, batch):
            xb, yb = x[s], y[s]
            xbest = project(xb + eta * stripes[s].to(x.device), xb, eta)
            margin, fooled = _margin(model, xbest, yb, success, objective)
            act = (~fooled).nonzero().flatten()
            for side, vh, vw, sign in draws:
                if not len(act):
                    break
                idx = act + s.start
                vh, vw = vh[idx].to(x.device), vw[idx].to(x.device)
                mask = (((rows >= vh[:, None]) & (rows < vh[:, None] + side))[:, :, None]
                        & ((cols >= vw[:, None]) & (cols < vw[:, None] + side))[:, None, :])[:, None]
                xa = xbest[act]
                xn = project(torch.where(mask, xa + 2 * eta * sign[idx].to(x), xa), xb[act], eta)
                m, f = _margin(model, xn, yb[act], success, objective)
                # a logit depends on the batch's size by ~1e-6 (kernel blocking): a gain below
                # 1e-4 is a tie, so that the result does not depend on `batch`
                better = (m < margin[act] - 1e-4) | f
                j = act[better]
                xbest[j], margin[j] = xn[better], m[better]
                act = act[~f]
            out[s] = xbest
    return out


def _p_square(q: int, queries: int, p_init: float) -> float:
    it = int(q / queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _margin(model, x, y, success, objective=None):
    if objective is not None:
        return objective(x, y)
    logits = model(x)
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    m = zy - other
    fooled = success(x, y) if success is not None else m < 0
    return m, fooled


def attnet_example(attacker: nn.Module, x: torch.Tensor, eta: float) -> torch.Tensor:
    """z(x; v), the one definition used by training, the game and the evaluation; the attacker's
    `param` attribute (set from its params or checkpoint; absent means tanh) picks the form."""
    return squash(attacker(x), x, eta, getattr(attacker, "param", "tanh"))


@torch.no_grad()
def attnet(attacker: nn.Module, x: torch.Tensor, eta: float, batch: int = 1000) -> torch.Tensor:
    out = torch.empty_like(x)
    with eval_mode(attacker):
        for s in _batches(len(x), batch):
            out[s] = attnet_example(attacker, x[s], eta)
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    with eval_mode(model):
        return torch.cat([model(x[s]).argmax(1) for s in _batches(len(x), batch)]) if len(x) else \
            torch.empty(0, dtype=torch.long, device=x.device)
