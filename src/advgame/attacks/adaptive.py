"""Adaptive white-box attacks on a defense with detectors, as the field attacks MagNet since
Carlini & Wagner 2017 ("MagNet and 'Efficient Defenses Against Adversarial Attacks' are Not
Robust to Adversarial Examples", arXiv 1711.08478): the attacker differentiates the whole
defense (detectors + reformer + classifier) and succeeds only with an input that is both
misclassified and accepted by every detector.

`pgd-adaptive` is L-inf PGD on
    loss = -max(z_y - max_{i != y} z_i, -kappa) - weight * sum_d relu(s_d / t_d - (1 - slack))
(a CW margin, plus each detector's score s_d relative to its threshold t_d; the slack aims a
little below the threshold so that a step does not land just above it). Each example keeps the
first iterate that is misclassified and undetected (from the same pass that gives the
gradient), else its highest-loss one; fooled examples leave the batch. Per weight (default 10,
then 3: on small MagNet-like defenders 10 was best at eta 0.3 and 3 at eta 0.2, and each found
images the other missed) two runs, each on the examples still standing: a random start, then a
guided start: the nearest (L2) evaluated image of another class that the defense accepts and
classifies as its own label, projected into the ball. At eta 1 the ball is the whole box, so
that start is itself a success.

The same detector-aware objective serves APGD (`joint_loss`, CE/DLR/targeted DLR) and Square
(`joint_margin`), so that no attack of the strong set ignores the detector.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advgame.attacks.core import ce_loss, dlr_loss, project
from advgame.attacks.target import Call, Defender
from advgame.models import batch_slices, eval_mode

WEIGHTS = (10.0, 3.0)  # pgd-adaptive's detector weights, tried in turn (module docstring)
WEIGHT = 10.0   # APGD's and Square's: one unit of margin per 10% of a threshold
KAPPA = 10.0    # margin cap: beyond it only the detector term moves the example
SLACK = 0.02    # aim 2% below each threshold


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{i != y} z_i (negative = misclassified)."""
    zy = logits.gather(1, y[:, None])[:, 0]
    return zy - logits.scatter(1, y[:, None], -math.inf).amax(1)


def excess(scores: torch.Tensor, thresholds: torch.Tensor, slack: float = SLACK) -> torch.Tensor:
    """Per example, the detectors' scores above (1 - slack) x their thresholds, in units of the
    threshold (0 when every score is comfortably below)."""
    return F.relu(scores / thresholds - (1.0 - slack)).sum(1)


def _thresholds(defender: Defender, device) -> torch.Tensor:
    if defender.detect is None or defender.thresholds is None:
        raise ValueError(f"{defender.name}: an adaptive attack needs a defender with a detector")
    return torch.tensor(defender.thresholds, device=device)


def joint_loss(defender: Defender, kind: str = "ce", weight: float = WEIGHT):
    """A loss for the attacks of attacks.py/apgd.py (`loss.joint`: `(x, y, target) -> (loss,
    fooled)` from one pass): `kind` ("ce", "dlr", "dlr-t", "margin") minus the detector term;
    fooled = misclassified and undetected."""

    def loss(x, y, target=None):
        thr = _thresholds(defender, x.device)
        logits, scores = defender.detect(x)
        if kind == "ce":
            base = F.cross_entropy(logits, y, reduction="none")
        elif kind in ("dlr", "dlr-t"):
            base = dlr_loss(logits, y, target)
        else:
            base = -margin(logits, y).clamp(min=-KAPPA)
        fooled = (logits.argmax(1) != y) & ~(scores > thr).any(1)
        return base - weight * excess(scores, thr), fooled.detach()

    loss.joint = True  # type: ignore[attr-defined]
    return loss


def joint_margin(defender: Defender, weight: float = WEIGHT):
    """Square's objective on a defender with detectors: (margin + detector term, fooled)."""
    def objective(x, y):
        thr = _thresholds(defender, x.device)
        logits, scores = defender.detect(x)
        fooled = (logits.argmax(1) != y) & ~(scores > thr).any(1)
        return margin(logits, y) + weight * excess(scores, thr), fooled

    return objective


@torch.no_grad()
def guided_starts(defender: Defender, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Per image, the nearest (L2) image of x of another class that the defense accepts and
    labels correctly (so it is labelled != y); x itself where there is none."""
    wrong, rejected = defender.outcome(x, y, batch)
    ok = (~wrong & ~rejected).nonzero().flatten()
    start = x.clone()
    if not len(ok):
        return start
    pool, pool_y = x[ok].flatten(1), y[ok]
    for s in batch_slices(len(x), batch):
        d = torch.cdist(x[s].flatten(1), pool)
        d[y[s, None] == pool_y[None, :]] = math.inf
        dist, j = d.min(1)
        has = torch.isfinite(dist)
        idx = torch.arange(s.start, s.stop, device=x.device)[has]
        start[idx] = x[ok[j[has]]]
    return start


def adaptive_pgd(defender: Defender, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int = 40,
                 step_size: float | None = None, seed: int = 0, batch: int = 500, guided: bool = True,
                 weights: tuple[float, ...] = WEIGHTS, early_stop: bool = True) -> torch.Tensor:
    """`pgd-adaptive` (module docstring): per weight a random-start run, then a guided-start
    run, each on what is not fooled yet. Random starts are drawn for all of x from one generator
    and the guided starts come from all of x, so the result does not depend on `batch`."""
    step_size = 2.5 * eta / steps if step_size is None else step_size
    gen = torch.Generator().manual_seed(seed)
    noise = torch.empty(x.shape).uniform_(-eta, eta, generator=gen).to(x.device)
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    starts = [lambda i: (x[i] + noise[i]).clamp(0.0, 1.0)]
    if guided:
        far = guided_starts(defender, x, y, batch)
        starts.append(lambda i: project(far[i], x[i], eta))
    with eval_mode(defender.model):
        for weight, start in ((w, s) for w in weights for s in starts):
            loss = joint_loss(defender, "margin", weight)
            todo = (~fooled).nonzero().flatten()
            for s in batch_slices(len(todo), batch):
                i = todo[s]
                xa, f, lv = _run(loss, x[i], y[i], start(i), eta, steps, step_size, early_stop)
                better = f | (lv > best_loss[i])
                j = i[better]
                best[j], best_loss[j], fooled[j] = xa[better], lv[better], f[better]
    return best


def _run(loss, x, y, x0, eta, steps, step_size, early_stop):
    """One PGD run on one batch: (x_out, fooled, loss of x_out)."""
    x_cur, out = x0.clone(), x0.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    act = torch.arange(len(x), device=x.device)
    for k in range(steps + 1):
        with torch.enable_grad():
            xg = x_cur[act].requires_grad_(k < steps)
            lv, f = loss(xg, y[act])
            g = torch.autograd.grad(lv.sum(), xg)[0] if k < steps else None
        lv = lv.detach()
        keep = ~done[act] & (f | (lv > best_loss[act]))
        i = act[keep]
        out[i], best_loss[i] = x_cur[i], lv[keep]
        done[act[f]] = True
        if early_stop:
            act, g = act[~f], (g[~f] if g is not None else None)
        if k == steps or len(act) == 0:
            break
        x_cur[act] = project(x_cur[act] + step_size * g.sign(), x[act], eta)
    return out, done, best_loss


def loss_for(defender: Defender, kind: str):
    """APGD's loss: the plain one ("ce", "dlr", "dlr-t"), the defender's own white-box loss for
    CE, or with a differentiable detector the detector-aware one."""
    if defender.detect is not None:
        return joint_loss(defender, kind)
    if kind == "ce" and defender.attack_loss is not ce_loss:
        return defender.attack_loss
    return kind


def run_pgd_adaptive(c: Call) -> torch.Tensor:
    """`pgd-adaptive` with the evaluation's PGD steps and step ratio."""
    p = c.plan
    return adaptive_pgd(c.defender, c.x, c.y, c.eta, steps=p.pgd_steps,
                        step_size=p.pgd_step_ratio * c.eta / p.pgd_steps, seed=c.seed, batch=p.batch)
