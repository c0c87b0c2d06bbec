"""Square Attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV), L-inf: score-based, no gradients."""

from __future__ import annotations

import math

import torch
from torch import nn

from advgame.attacks import keyed
from advgame.attacks.adaptive import joint_margin
from advgame.attacks.core import SuccessFn, project
from advgame.attacks.target import Call, success_of
from advgame.models import batch_slices, eval_mode, inference_copy


def square(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, queries: int = 1000,
           p_init: float = 0.8, seed: int = 0, batch: int = 1000,
           success: SuccessFn | None = None, objective=None, index: torch.Tensor | None = None,
           total: int | None = None) -> torch.Tensor:
    """Square attack, L-inf (Andriushchenko et al. 2020, arXiv 1912.00049): black-box random
    search on the margin loss. Start from vertical stripes of +-eta; each query sets a random
    square (side from the p schedule of the paper, on the scale of 10,000 queries) to +-eta per
    channel and keeps it if the margin drops. Fooled examples stop querying. Unlike the
    reference code, the stripes and every query's square place and signs are drawn per image
    (attacks/keyed.py: `index`, x's rows in an evaluated set of `total` images), so the draws
    depend neither on `batch` nor on the other images attacked (a logit still moves by ~1e-6
    with the batch's size: a gain that close to the 1e-4 tie rule can fall either way).
    `objective(x, y) -> (margin, fooled)` replaces the margin and `success` (one pass; e.g.
    adaptive.joint_margin).
    Without an objective the queries go through a frozen copy of the model (models.inference_copy),
    and an example whose margin there lies within 1e-4 of 0 is judged by the model itself."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = x.shape
    index, total = keyed.rows(n, index, total)
    out = torch.empty_like(x)
    stripes = keyed.randint(2, (c, 1, w), gen, index, total).to(x) * 2 - 1
    draws = []
    for q in range(queries):
        side = max(int(round(math.sqrt(_p_square(q, queries, p_init) * h * w))), 1)
        side = min(side, h - 1, w - 1) if min(h, w) > 1 else 1
        draws.append((side, keyed.randint(h - side + 1, (), gen, index, total),
                      keyed.randint(w - side + 1, (), gen, index, total),
                      keyed.randint(2, (c, 1, 1), gen, index, total) * 2 - 1))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    fast = inference_copy(model, x[:batch]) if objective is None else None
    with eval_mode(model), torch.no_grad():
        for s in batch_slices(n, batch):
            xb, yb = x[s], y[s]
            xbest = project(xb + eta * stripes[s].to(x.device), xb, eta)
            margin, fooled = _margin(model, xbest, yb, success, objective, fast)
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
                m, f = _margin(model, xn, yb[act], success, objective, fast)
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


def _margin(model, x, y, success, objective=None, fast=None):
    if objective is not None:
        return objective(x, y)
    logits = (fast or model)(x)
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    m = zy - other
    if success is not None:
        return m, success(x, y)
    fooled = m < 0
    if fast is not None:  # near 0 the frozen copy (~1e-5 off) cannot decide: the model does
        i = (m.abs() < 1e-4).nonzero().flatten()
        if len(i):
            fooled[i] = model(x[i]).argmax(1) != y[i]
    return m, fooled


def run(c: Call) -> torch.Tensor:
    """Square with the evaluation's queries, `square_restarts` runs (each on the images the
    runs before left unfooled, seeds c.seed, c.seed + 1, ...); with a detector its margin
    objective sees the detector."""
    p, d = c.plan, c.defender
    success = success_of(d)
    index, total = keyed.of_call(c)
    best = c.x.clone()
    todo = torch.arange(len(c.x), device=c.x.device)
    for r in range(getattr(p, "square_restarts", 1)):
        if not len(todo):
            break
        xa = square(d.model, c.x[todo], c.y[todo], c.eta, p.square_queries, seed=c.seed + r, batch=p.batch,
                    success=success, objective=joint_margin(d) if d.detect else None,
                    index=None if index is None else index[todo.cpu()], total=total)
        best[todo] = xa
        with torch.no_grad(), eval_mode(d.model):
            fooled = success(xa, c.y[todo]) if success else d.model(xa).argmax(1) != c.y[todo]
        todo = todo[~fooled]
    return best
