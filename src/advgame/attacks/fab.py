"""FAB-T, the targeted Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted
Adversarial Examples with a Fast Adaptive Boundary Attack", ICML), L-inf, in torch, as AutoAttack
runs it (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML; fra31/auto-attack, fab_base.py and fab_projections.py):
against each of the `targets` = 9 most likely other classes of the clean input in turn, 100
iterations, 1 restart per target, alpha_max 0.1, overshoot 1.05, backward step 0.9.

FAB looks for the adversarial point of smallest L-inf norm, not for any point in the eta-ball.
Per iteration, at the iterate x1: the decision boundary of the target, z_t - z_y = 0, is
linearised at x1 (a hyperplane w.z = b); x1 and the clean x are both projected onto that
hyperplane within the box [0, 1] (`projection_linf`), and the next iterate is a convex
combination of the two projections, overshot by 1.05, that leans towards x's projection (weight
alpha <= alpha_max) the further x1 has drifted from x. An iterate that fools the defender is
recorded if it is the closest to x found so far, and then pulled back towards x (x + 0.9 (x1 - x)).

An example counts as fooled when the closest point found fools the defender (`success`, default:
misclassified) within eta of x; it gets that point, an example not fooled gets x back (like
AutoAttack). Examples fooled by x itself are not attacked. With restarts > 1, later restarts
start at a random point at L-inf distance eta / 2 from x, drawn per image (attacks/keyed.py:
they depend neither on `batch` nor, given `index`, on the other images attacked; FAB's steps follow the gradients' values, so a batched forward's
float rounding may move a point by ~1e-5).

A defender with a detector (MagNet): FAB follows the gradients of the defender's end-to-end model
(through the reformer) and `success_of(defender)` counts only misclassified and accepted points,
but FAB itself is not detector-aware: the boundary it approaches is the classifier's.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from advgame.attacks import keyed
from advgame.attacks.core import SuccessFn
from advgame.attacks.target import Call, success_of
from advgame.models import batch_slices, eval_mode


def projection_linf(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row: the step d of smallest L-inf norm with w.(t + d) = b and t + d in [0, 1]^D (rows
    of t, w: points and hyperplane normals, (n, D); b: (n,)); where the box does not reach the
    hyperplane, the step to the box's corner closest to it. With a budget lam the best step moves
    each coordinate lam towards the hyperplane, capped at the box: d_i = -sign(w_i) min(lam, p_i),
    p_i its room; w.d = -sum_i |w_i| min(lam, p_i) is piecewise linear in lam, with a kink at each
    p_i: find the piece that reaches b, then solve it for lam."""
    w, b = w.clone(), b.clone()
    # orient the hyperplane so that t lies on its positive side: w.t - b >= 0, to be decreased
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w, b = w * sign[:, None], b * sign
    a = (w < 0).float()               # the box end each coordinate moves to: 1 if w_i < 0, else 0
    d = (a - t) * (w != 0).float()    # the full move to the box end (lam = inf)
    p = a - t * (2 * a - 1)           # room p_i = |a_i - t_i|: the kink of coordinate i
    b = b - (w * t).sum(1)            # the change of w.z needed: w.d = b (<= 0)
    b0 = (w * d).sum(1)               # the largest change within the box (w.d at lam = inf)
    order = p.argsort(1)              # kinks in increasing order
    desc = order.flip(1)
    ws = w.gather(1, desc)
    s = ws.abs().cumsum(1)            # s[k]: sum of |w_i| over the k + 1 largest rooms (still growing)
    # sb[k]: w.d of the coordinates already at their box end when those k + 1 are not (b0 + ...)
    sb = (-ws * d.gather(1, desc)).cumsum(1) + b0[:, None]
    # w.d at lam = the smallest room, every coordinate still growing: the hyperplane is reached
    # before any coordinate hits the box when b lies above it (the plain |w.t - b| / ||w||_1)
    free = b - (sb[:, -1] - s[:, -1] * p.gather(1, order[:, :1])[:, 0]) > 0
    boxed = (b - b0 > 0) & ~free      # reachable, with some coordinates at their box end
    # binary search over the kinks (in decreasing order) for the last k where lam = p_(k) overshoots
    lo = torch.zeros(int(boxed.sum()), device=t.device)
    hi = torch.full_like(lo, w.shape[1] - 1)
    order_, sb_, s_, p_, b_ = order[boxed], sb[boxed], s[boxed], p[boxed], b[boxed]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lo + hi) / 2)
        k = mid.long()[:, None]
        kink = p_.gather(1, order_.gather(1, order_.shape[1] - 1 - k))
        over = b_ - (sb_.gather(1, k) - s_.gather(1, k) * kink).squeeze(1) > 0
        lo, hi = torch.where(over, mid, lo), torch.where(over, hi, mid)
    k = lo.long()
    if free.any():
        lam = ((b[free] - sb[free, -1]) / -s[free, -1]).clamp_min(0)[:, None]
        d[free] = (2 * a[free] - 1) * lam
    lam = ((b[boxed] - sb[boxed, k]) / -s[boxed, k]).clamp_min(0)[:, None]
    d[boxed] = torch.min(lam, d[boxed]) * a[boxed] + torch.max(-lam, d[boxed]) * (1 - a[boxed])
    return d * (w != 0).float()  # neither reachable: d stays the full move towards the hyperplane


def _boundary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
    """The target's margin f = z_t - z_y at x and its input gradient, flattened (n, D)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        z = model(xg)
        f = z.gather(1, t[:, None])[:, 0] - z.gather(1, y[:, None])[:, 0]
        (g,) = torch.autograd.grad(f.sum(), xg)
    return f.detach(), g.flatten(1)


def _fools(model: nn.Module, x: torch.Tensor, y: torch.Tensor, success: SuccessFn | None) -> torch.Tensor:
    with torch.no_grad():
        return success(x, y) if success is not None else model(x).argmax(1) != y


def _run(model, x, y, t, start, iters, success, alpha_max, overshoot, beta):
    """One FAB-T run on one batch from `start`; returns (closest fooling point, its L-inf norm;
    x and inf where none was found)."""
    n, view = len(x), (-1,) + (1,) * (x.ndim - 1)
    x1, best = start.clone(), x.clone()
    norm = torch.full((n,), math.inf, device=x.device)
    for _ in range(iters):
        f, w = _boundary(model, x1, y, t)
        b = (w * x1.flatten(1)).sum(1) - f  # the linearised boundary w.z = b at x1
        d = projection_linf(torch.cat((x1.flatten(1), x.flatten(1))), torch.cat((w, w)), torch.cat((b, b)))
        d1, d2 = d[:n].view_as(x), d[n:].view_as(x)
        size = d.abs().amax(1).clamp_min(1e-8)
        alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, alpha_max).view(view)
        x1 = ((x1 + overshoot * d1) * (1 - alpha) + (x + overshoot * d2) * alpha).clamp(0.0, 1.0)
        adv = _fools(model, x1, y, success)
        r = (x1 - x).flatten(1).abs().amax(1)
        better = adv & (r < norm)
        best[better], norm[better] = x1[better], r[better]
        x1[adv] = x[adv] + beta * (x1[adv] - x[adv])  # back towards x: look for a closer point
    return best, norm


def _kth_other(order: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (from 0) most likely class other than y, from the clean logits' descending order."""
    return torch.where((order[:, :k + 1] == y[:, None]).any(1), order[:, k + 1], order[:, k])


def fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, iters: int = 100,
          targets: int = 9, restarts: int = 1, seed: int = 0, batch: int = 1000,
          success: SuccessFn | None = None, alpha_max: float = 0.1, overshoot: float = 1.05,
          beta: float = 0.9, index: torch.Tensor | None = None, total: int | None = None) -> torch.Tensor:
    """FAB-T against the `targets` most likely other classes in turn (as many as the model has),
    `restarts` runs each, every run only on the examples not fooled within eta yet. Returns per
    example the closest fooling point found if it lies within eta of x, else x. `index`: x's
    rows in an evaluated set of `total` images, which keys the later restarts' random starts."""
    if not len(x):
        return x.clone()
    gen = torch.Generator().manual_seed(seed)
    index, total = keyed.rows(len(x), index, total)
    with eval_mode(model):
        with torch.no_grad():
            order = torch.cat([model(x[s]) for s in batch_slices(len(x), batch)]).sort(1, descending=True).indices
        best = x.clone()
        norm = torch.full((len(x),), math.inf, device=x.device)
        # fooled by x itself: nothing to attack
        fooled = torch.cat([_fools(model, x[s], y[s], success) for s in batch_slices(len(x), batch)])
        for k in range(min(targets, order.shape[1] - 1)):
            for r in range(restarts):
                noise = keyed.uniform(x.shape[1:], -1, 1, gen, index, total).to(x.device) if r else None
                todo = (~fooled).nonzero().flatten()
                for s in batch_slices(len(todo), batch):
                    i = todo[s]
                    start = x[i] if noise is None else (x[i] + 0.5 * eta * noise[i] / noise[i].flatten(
                        1).abs().amax(1).view((-1,) + (1,) * (x.ndim - 1))).clamp(0.0, 1.0)
                    xa, nr = _run(model, x[i], y[i], _kth_other(order[i], y[i], k), start, iters, success,
                                  alpha_max, overshoot, beta)
                    better = nr < norm[i]
                    best[i[better]], norm[i[better]] = xa[better], nr[better]
                fooled |= norm <= eta
    out = x.clone()
    keep = norm <= eta
    out[keep] = best[keep]
    return out


def run_fab_t(c: Call) -> torch.Tensor:
    """FAB-T with the evaluation's `fab_iters`, `fab_targets` and `fab_restarts` (per target)."""
    p, d = c.plan, c.defender
    index, total = keyed.of_call(c)
    return fab_t(d.model, c.x, c.y, c.eta, p.fab_iters, p.fab_targets, getattr(p, "fab_restarts", 1), seed=c.seed,
                 batch=p.batch, success=success_of(d), index=index, total=total)
