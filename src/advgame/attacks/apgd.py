"""APGD, Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML), L-inf, in torch.

Per example: step size 2 * eta, momentum 0.75, and at checkpoints (period 22% of the
iterations, shrinking by 3% down to 6%) the step is halved and the iterate restarted from the
best point when the loss rose in at most 75% of the steps since the last checkpoint, or when the
step was not halved last time and the best loss did not improve. Losses: cross-entropy (`ce`),
the Difference-of-Logits-Ratio (`dlr`, needs >= 3 classes) and its targeted form (`dlr-t`,
>= 4 classes; `apgd_t` runs it against the top-k other classes).

Like every iterative attack here (attacks.py), an example counts as fooled at the first
evaluated iterate that fools the defender (`success`, default: misclassified), that iterate
is kept (else the highest-loss one), and fooled examples leave the batch (early stop). Random
starts are drawn per image (attacks/keyed.py), so results depend neither on `batch` nor, given
`index`, on which other images of the evaluated set are attacked with an image.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from advgame.attacks import keyed
from advgame.attacks.adaptive import loss_for
from advgame.attacks.core import (
    LossFn,
    SuccessFn,
    ce_logits,
    dlr_loss,
    evaluate_point,
    project,
)
from advgame.attacks.target import Call, success_of
from advgame.models import batch_slices, eval_mode

LOGIT_LOSSES = {"ce": ce_logits, "dlr": dlr_loss, "dlr-t": dlr_loss}


def _run(model, x, y, x0, eta, iters, loss, success, early_stop, target=None, rho=0.75,
         momentum=0.75):
    """One APGD run on one batch; returns (x_out, fooled, best_loss)."""
    n = len(x)
    view = (-1,) + (1,) * (x.ndim - 1)
    x_cur, x_prev = x0.clone(), x0.clone()
    x_max, grad, grad_max = x0.clone(), torch.zeros_like(x), torch.zeros_like(x)
    f_max = torch.full((n,), -math.inf, device=x.device)
    prev_loss = torch.full((n,), -math.inf, device=x.device)
    step = torch.full((n,), 2.0 * eta, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    out = x0.clone()
    n_up = torch.zeros(n, device=x.device)
    reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
    f_max_last = f_max.clone()
    period, decr, floor = max(int(0.22 * iters), 1), max(int(0.03 * iters), 1), max(int(0.06 * iters), 1)
    since = 0
    act = torch.arange(n, device=x.device)
    for k in range(iters + 1):
        t = None if target is None else target[act]
        lv, g, fooled = evaluate_point(model, x_cur[act], y[act], loss, success, need_grad=k < iters,
                                       target=t)
        hit = act[fooled & ~done[act]]
        out[hit], done[hit] = x_cur[hit], True
        up = lv > f_max[act]
        i = act[up]
        x_max[i], f_max[i] = x_cur[i], lv[up]
        if g is not None:
            grad[act] = g
            grad_max[i] = g[up]
        if k > 0:
            n_up[act] += (lv > prev_loss[act]).float()
        prev_loss[act] = lv
        since += 1
        if k < iters and since == period:
            # checkpoint: halve the step and restart from the best point where progress stalled
            red = (n_up <= rho * period) | (~reduced_last & (f_max_last >= f_max))
            reduced_last, f_max_last, since = red, f_max.clone(), 0
            n_up.zero_()
            step[red] /= 2
            x_cur[red] = x_prev[red] = x_max[red]
            grad[red] = grad_max[red]
            period = max(period - decr, floor)
        if early_stop:
            act = act[~done[act]]
        if k == iters or len(act) == 0:
            break
        xc, xp = x_cur[act], x_prev[act]
        z = project(xc + step[act].view(view) * grad[act].sign(), x[act], eta)
        a = momentum if k > 0 else 1.0
        x_prev[act] = xc
        x_cur[act] = project(xc + a * (z - xc) + (1 - a) * (xc - xp), x[act], eta)
    keep = ~done
    out[keep] = x_max[keep]
    return out, done, f_max


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, iters: int = 100,
         loss: str | LossFn = "ce", restarts: int = 1, seed: int = 0, batch: int = 1000,
         success: SuccessFn | None = None, early_stop: bool = True,
         target: torch.Tensor | None = None, index: torch.Tensor | None = None,
         total: int | None = None) -> torch.Tensor:
    """APGD with `loss` in ("ce", "dlr", "dlr-t" with `target`) or a per-example LossFn
    `(model, x, y)` (e.g. a detector-aware cross-entropy). Restarts run only on examples not
    yet fooled; over restarts an example keeps its fooled iterate, else its highest-loss one.
    `index`: x's rows in an evaluated set of `total` images, which keys the random starts."""
    lossfn = LOGIT_LOSSES[loss] if isinstance(loss, str) else loss
    if isinstance(loss, str) and loss in ("dlr", "dlr-t"):
        need = 3 if loss == "dlr" else 4
        # classes of the model: one forward on one example
        with torch.no_grad(), eval_mode(model):
            classes = model(x[:1]).shape[1] if len(x) else need
        if classes < need:
            raise ValueError(f"APGD with {loss} loss needs >= {need} classes, the model has {classes}")
    gen = torch.Generator().manual_seed(seed)
    index, total = keyed.rows(len(x), index, total)
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    with eval_mode(model):
        for _ in range(restarts):
            noise = keyed.uniform(x.shape[1:], -eta, eta, gen, index, total).to(x.device)
            todo = (~fooled).nonzero().flatten()
            for s in batch_slices(len(todo), batch):
                i = todo[s]
                xa, f, lv = _run(model, x[i], y[i], (x[i] + noise[i]).clamp(0.0, 1.0), eta, iters,
                                 lossfn, success, early_stop, None if target is None else target[i])
                better = f | (lv > best_loss[i])
                j = i[better]
                best[j], best_loss[j], fooled[j] = xa[better], lv[better], f[better]
    return best


def apgd_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float, iters: int = 100,
           targets: int = 3, seed: int = 0, batch: int = 1000, success: SuccessFn | None = None,
           early_stop: bool = True, loss: str | LossFn = "dlr-t", restarts: int = 1,
           index: torch.Tensor | None = None, total: int | None = None) -> torch.Tensor:
    """APGD-T: targeted DLR against each of the `targets` most likely other classes of the clean
    input in turn (`restarts` runs each), each run only on the examples not fooled yet. `loss` may replace the targeted
    DLR by one taking `target` (e.g. adaptive.joint_loss(defender, "dlr-t")); `index`, `total` as in apgd."""
    index, total = keyed.rows(len(x), index, total)
    with torch.no_grad(), eval_mode(model):
        logits = torch.cat([model(x[s]) for s in batch_slices(len(x), batch)])
    order = logits.sort(1, descending=True).indices
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for k in range(targets):
        todo = (~fooled).nonzero().flatten()
        if not len(todo):
            break
        # the k-th most likely class other than y
        cand = order[todo]
        t = torch.where((cand[:, :k + 1] == y[todo, None]).any(1), cand[:, k + 1], cand[:, k])
        xa = apgd(model, x[todo], y[todo], eta, iters, loss, restarts, seed + k, batch, success,
                  early_stop, target=t, index=index[todo.cpu()], total=total)
        f = _fooled(model, xa, y[todo], success, batch)
        best[todo[f]] = xa[f]
        if k == 0:
            best[todo[~f]] = xa[~f]
        fooled[todo[f]] = True
    return best


def _fooled(model, xa, y, success, batch):
    with torch.no_grad(), eval_mode(model):
        if success is not None:
            return torch.cat([success(xa[s], y[s]) for s in batch_slices(len(xa), batch)])
        return torch.cat([model(xa[s]).argmax(1) != y[s] for s in batch_slices(len(xa), batch)])


def run_ce(c: Call) -> torch.Tensor:
    """APGD-CE with the evaluation's iterations and restarts (detector-aware with a detector)."""
    p, d = c.plan, c.defender
    index, total = keyed.of_call(c)
    return apgd(d.model, c.x, c.y, c.eta, p.apgd_iters, loss_for(d, "ce"), p.apgd_restarts, c.seed, p.batch,
                success_of(d), index=index, total=total)


def run_dlr(c: Call) -> torch.Tensor:
    """APGD-DLR (untargeted)."""
    p, d = c.plan, c.defender
    index, total = keyed.of_call(c)
    return apgd(d.model, c.x, c.y, c.eta, p.apgd_iters, loss_for(d, "dlr"), p.apgd_restarts, c.seed, p.batch,
                success_of(d), index=index, total=total)


def run_t(c: Call) -> torch.Tensor:
    """APGD-T: targeted DLR over the top `apgd_targets` classes, `apgd_restarts` runs each."""
    p, d = c.plan, c.defender
    index, total = keyed.of_call(c)
    return apgd_t(d.model, c.x, c.y, c.eta, p.apgd_iters, p.apgd_targets, c.seed, p.batch, success_of(d),
                  loss=loss_for(d, "dlr-t"), restarts=p.apgd_restarts, index=index, total=total)
