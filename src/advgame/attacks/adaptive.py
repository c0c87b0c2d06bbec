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
gradient), else its highest-loss one; fooled examples leave the batch. The step size falls
from eta/2 to eta/50 (cosine): large steps cross from the start towards a misclassification, the
small last ones settle just under the threshold. Per weight (eval.adaptive_weights, default 10
then 3: on the study's MagNet at eta 0.3, from the first guided start, 10 fooled 0.77 and 3, 30
and a per-image weight raised on rejection and lowered on acceptance 0.35-0.58; 3 adds 0.05 at
eta 0.2 and 0.01 at 0.1) runs, each on the examples still standing: a random start, then
eval.adaptive_starts guided starts (default 8): the evaluated images of other classes that the
defense accepts and classifies as their own label, nearest (L2) first, each projected into the
ball. The guided starts carry the attack on MagNet (random starts alone fool under 0.3 at eta
0.3; each further neighbour adds 1-4%, and little after the eighth). Below
eval.adaptive_guided_eta (default 0.3) they are skipped: at eta 0.1 and 0.2 the eight added 1
and 0 of 200 images to the random start, at 8x its cost (a smaller eta's misses are attacked
again at the larger etas, `carry`). At eta 1 the ball is the whole box, so the first guided start
is itself a success. Issue 31, the study's MagNet, first 500 test images, eta 0.3, carried from
0.1 and 0.2: 0.866 fooled (the recipe before: weights 10 and 3, a random and one guided start, a
fixed step: 0.724), all four etas in 60 s on 2 cores (before: 73 s). Tried and left out (same
starts): a CE loss instead of the margin, the detector-aware loss on the bare classifier's logits
(BPDA-like, without the reformer), a "selective" loss (only the detector term once
misclassified): each fooled fewer. PGD on the bare classifier judged on the whole defense (the
transfer attack from the classifier without the reformer) is `pgd-curr:grey-box`.

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
STARTS = 8        # pgd-adaptive's guided starts per weight
STEP_MAX, STEP_MIN = 0.5, 0.02  # pgd-adaptive's step size, cosine from eta/2 down to eta/50
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
def guided_starts(defender: Defender, x: torch.Tensor, y: torch.Tensor, batch: int = 500, k: int = 1,
                  pool: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Per image of x, its k nearest (L2) images of the pool (default x) of another class that
    the defense accepts and labels correctly (so labelled != y), nearest first: shape (k, *x.shape);
    x itself where there are fewer."""
    px, py = (x, y) if pool is None else pool
    wrong, rejected = defender.outcome(px, py, batch)
    ok = (~wrong & ~rejected).nonzero().flatten()
    start = x.expand(k, *x.shape).clone()
    if not len(ok):
        return start
    flat, pool_y = px[ok].flatten(1), py[ok]
    for s in batch_slices(len(x), batch):
        d = torch.cdist(x[s].flatten(1), flat)
        d[y[s, None] == pool_y[None, :]] = math.inf
        dist, j = d.topk(min(k, len(ok)), dim=1, largest=False)
        for r in range(dist.shape[1]):
            has = torch.isfinite(dist[:, r])
            idx = torch.arange(s.start, s.stop, device=x.device)[has]
            start[r, idx] = px[ok[j[has, r]]]
    return start


def adaptive_pgd(defender: Defender, x: torch.Tensor, y: torch.Tensor, eta: float, steps: int = 40,
                 seed: int = 0, batch: int = 500, starts: int = STARTS, weights: tuple[float, ...] = WEIGHTS,
                 early_stop: bool = True,
                 pool: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """`pgd-adaptive` (module docstring): per weight a random-start run, then one run per guided
    start (`starts` of them, nearest first), each on what is not fooled yet. Random starts are
    drawn for all of x from one generator and the guided starts come from all of x (or `pool`),
    so the result does not depend on `batch`."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.empty(x.shape).uniform_(-eta, eta, generator=gen).to(x.device)
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    firsts, sizes = [(x + noise).clamp(0.0, 1.0)], step_sizes(eta, steps)
    if starts:
        firsts += list(guided_starts(defender, x, y, batch, starts, pool))
    with eval_mode(defender.model):
        for weight, x0 in ((w, s) for w in weights for s in firsts):
            loss = joint_loss(defender, "margin", weight)
            todo = (~fooled).nonzero().flatten()
            for s in batch_slices(len(todo), batch):
                i = todo[s]
                xa, f, lv = _run(loss, x[i], y[i], project(x0[i], x[i], eta), eta, sizes, early_stop)
                better = f | (lv > best_loss[i])
                j = i[better]
                best[j], best_loss[j], fooled[j] = xa[better], lv[better], f[better]
    return best


def step_sizes(eta: float, steps: int) -> list[float]:
    """The step size of each step: cosine from STEP_MAX x eta down to STEP_MIN x eta."""
    hi, lo = STEP_MAX * eta, STEP_MIN * eta
    return [lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * k / steps)) for k in range(steps)]


def _run(loss, x, y, x0, eta, sizes, early_stop):
    """One PGD run on one batch, one step per entry of `sizes`: (x_out, fooled, loss of x_out)."""
    x_cur, out = x0.clone(), x0.clone()
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    best_loss = torch.full((len(x),), -math.inf, device=x.device)
    act = torch.arange(len(x), device=x.device)
    steps = len(sizes)
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
        x_cur[act] = project(x_cur[act] + sizes[k] * g.sign(), x[act], eta)
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
    """`pgd-adaptive` with the evaluation's PGD steps, eval.adaptive_weights and, from
    eval.adaptive_guided_eta on, eval.adaptive_starts guided starts from every evaluated image
    (the call's pool)."""
    p = c.plan
    starts = p.adaptive_starts if c.eta >= p.adaptive_guided_eta - 1e-9 else 0
    return adaptive_pgd(c.defender, c.x, c.y, c.eta, steps=p.pgd_steps, seed=c.seed, batch=p.batch,
                        starts=starts, weights=tuple(p.adaptive_weights), pool=c.pool)
