"""The defender-vs-attacker game (AttNet-curr, the attacker trained alone, is in attacker.py).

Notation (docs/protocol.md): defender g(x; u) -> logits, attacker h(x; v), adversarial example
z(x; v) = clip(x + eta * tanh(h(x; v)), 0, 1) (attacks.attnet_example: an attacker built with
param "box" uses the box form instead) and game value f(u, v) = E l(g(z(x; v); u), y).

`play` is the game: per minibatch, k ascent steps of the attacker, then one descent step of the
defender, who also keeps a clean-loss weight c:

    mode     attacker ascends                     defender descends
    alt      f                                    c CE(g(x)) + (1-c) f
    minimax  f                                    c CE(g(x)) + (1-c) (f + gamma/2 ||grad_v f||^2)
    maximin  f - gamma/2 ||grad_u f||^2           c CE(g(x)) + (1-c) f

In minimax the penalty stands in for the attacker's best response (max_v f ~ f + step *
||grad_v f||^2 after one ascent step), so it multiplies the adversarial term, not the clean one.

`exploitability_probe` measures how far the game is from an equilibrium while it runs: a fresh
attacker trained against the frozen defender, its validation error minus the co-trained one's.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from advgame import UserError
from advgame.attacks.attnet import attnet, attnet_example
from advgame.attacks.attnet_training import train_attacker
from advgame.attacks.core import LossFn, ce_loss
from advgame.config import AttackerParams, GameParams
from advgame.training import (
    LogFn,
    check_finite,
    error_rate,
    make_optimizer,
    minibatches,
    mixed_error,
    progress,
)

MODES = ("alt", "minimax", "maximin")
PROBES = 5  # the exploitability probe's points in a game: evenly spaced, the last at its end
ProbeFn = Callable[[nn.Module, nn.Module], dict]


# ---------------------------------------------------------------- objectives (one per role)

def game_value(model: nn.Module, attacker: nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float,
               loss: LossFn = ce_loss) -> torch.Tensor:
    """f(u, v) on a minibatch: the defender's mean loss on the attacker's examples."""
    return loss(model, attnet_example(attacker, x, eta), y).mean()


def sq_grad_norm(value: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """||grad value||^2 over `params`, itself differentiable (double backprop)."""
    grads = torch.autograd.grad(value, params, create_graph=True)
    return sum(g.pow(2).sum() for g in grads)


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [p for p in m.parameters() if p.requires_grad]


def defender_objective(model, attacker, x, y, eta: float, clean_weight: float) -> torch.Tensor:
    """alt and maximin: c CE(g(x)) + (1 - c) f(u, v)."""
    f = game_value(model, attacker, x, y, eta)
    return clean_weight * F.cross_entropy(model(x), y) + (1 - clean_weight) * f


def minimax_defender_objective(model, attacker, x, y, eta: float, clean_weight: float,
                               gamma: float, parts: dict | None = None) -> torch.Tensor:
    """c CE(g(x)) + (1 - c) (f + gamma/2 ||grad_v f||^2): the gradient wrt u carries the
    sensitivity of the attacker's best response. `parts`, if given, receives f and the penalty
    (floats), so that training can show whether the penalty matters at this gamma."""
    f = game_value(model, attacker, x, y, eta)
    penalty = gamma / 2 * sq_grad_norm(f, _params(attacker))
    lookahead = f + penalty
    if parts is not None:
        parts["f"], parts["penalty"] = float(f.detach()), float(penalty.detach())
    return clean_weight * F.cross_entropy(model(x), y) + (1 - clean_weight) * lookahead


def maximin_attacker_objective(model, attacker, x, y, eta: float, gamma: float) -> torch.Tensor:
    """f - gamma/2 ||grad_u f||^2: the attacker leads, anticipating the defender's reply."""
    f = game_value(model, attacker, x, y, eta)
    return f - gamma / 2 * sq_grad_norm(f, _params(model))


# ---------------------------------------------------------------- the game

def play(mode: str, defender: nn.Module, attacker: nn.Module, x: torch.Tensor, y: torch.Tensor,
         cfg: GameParams, eta: float, device="cpu", log: LogFn | None = None,
         xt: torch.Tensor | None = None, yt: torch.Tensor | None = None,
         val: tuple[torch.Tensor, torch.Tensor] | None = None, probe: ProbeFn | None = None) -> list[dict]:
    """Train both players in place for cfg.epochs of `mode` (alt, minimax, maximin). Per epoch it
    logs both curves (defender loss, attacker objective), given a test split the clean and
    own-attacker test errors (monitoring), and given the validation split `val`, the game's
    criterion: clean_weight * clean error + (1 - clean_weight) * error against the co-trained
    attacker. The game has no early stop: its own attacker moves, so the criterion is a curve, not
    a stop rule (every epoch runs; the exploitability is what judges the game's end). Given a
    `probe` (exploitability_probe), the epochs of `probe_epochs` add its metrics; it runs on its
    own random stream, so the game is the same with or without it.
    NaN/inf or a loss above cfg.max_loss raises TrainingDiverged."""
    if mode not in MODES:
        raise UserError(f"game mode: unknown '{mode}'; allowed values: {', '.join(MODES)}")
    defender.to(device)
    attacker.to(device)
    u, v = _params(defender), _params(attacker)
    opt_u = make_optimizer(cfg, u)
    opt_v = make_optimizer(cfg, v, lr=cfg.lr_attacker)
    gen = torch.Generator().manual_seed(cfg.seed)
    parts: dict = {}
    objectives = _objectives(mode, defender, attacker, cfg, eta, parts)
    if xt is not None:
        xt, yt = xt.to(device), yt.to(device)
    if val is not None:
        xv, yv = val[0].to(device), val[1].to(device)
    history: list[dict] = []
    for epoch in range(cfg.epochs):
        defender.train()
        attacker.train()
        sums, count = {"defender_loss": 0.0, "attacker_objective": 0.0, "f": 0.0, "penalty": 0.0}, 0
        where = f"{mode} epoch {epoch + 1}"
        for xb, yb in progress(minibatches(x, y, cfg.batch, gen, device=device),
                               f"{where}/{cfg.epochs}", -(-len(x) // cfg.batch)):
            d, obj = _step(xb, yb, objectives, (u, opt_u), (v, opt_v), cfg, where)
            sums["defender_loss"] += d * len(xb)
            sums["attacker_objective"] += float(obj.detach()) * len(xb)  # at the last ascent step
            sums["f"] += parts.get("f", 0.0) * len(xb)
            sums["penalty"] += parts.get("penalty", 0.0) * len(xb)
            count += len(xb)
        metrics = _epoch_metrics(mode, sums, count)
        if xt is not None:
            metrics["clean_test_error"] = error_rate(defender, xt, yt)
            metrics["attnet_test_error"] = error_rate(defender, attnet(attacker, xt, eta), yt)
        if val is not None:
            defender.eval()
            attacker.eval()
            metrics["val"] = mixed_error(defender, xv, yv, attnet(attacker, xv, eta), 1 - cfg.clean_weight)
        if probe is not None and epoch + 1 in probe_epochs(cfg.epochs):
            with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
                metrics.update(probe(defender.eval(), attacker.eval()))
        history.append(metrics)
        if log is not None:
            log(metrics, epoch)
    defender.eval()
    attacker.eval()
    return history


def probe_epochs(epochs: int, points: int = PROBES) -> list[int]:
    """The game epochs (1-based) after which the exploitability probe runs: `points` of them,
    evenly spaced, the last one the game's end (every epoch of a game of at most `points`)."""
    return sorted({-(-i * epochs // points) for i in range(1, points + 1)} - {0})


def curve_rows(history: list[dict]) -> list[dict]:
    """The game's per-epoch rows for its curve CSV: every row has every column (the probe's are
    empty at the epochs it skipped), epoch first."""
    keys = list(dict.fromkeys(k for h in history for k in h))
    return [{"epoch": e + 1, **{k: h.get(k, "") for k in keys}} for e, h in enumerate(history)]


def exploitability_probe(x: torch.Tensor, y: torch.Tensor, val: tuple[torch.Tensor, torch.Tensor],
                         arch: str, cfg: AttackerParams, eta: float, device="cpu",
                         attack_loss: LossFn = ce_loss) -> ProbeFn:
    """probe(defender, attacker) -> the game's distance from an equilibrium at this point: a fresh
    attacker of `arch` trained on (x, y) against the frozen defender exactly as AttNet-curr is
    (train_attacker: warm start, early stop on `val`), then on the validation images its error
    (`probe_fresh_error`), the co-trained attacker's (`probe_cotrained_error`) and their
    difference (`exploitability`: 0 when the co-trained attacker is a best response)."""
    xv, yv = val[0].to(device), val[1].to(device)

    def probe(defender: nn.Module, attacker: nn.Module) -> dict:
        fresh, hist = train_attacker(defender, attack_loss, x, y, arch, cfg, eta, x.shape[1:], device,
                                     val=val)
        f = error_rate(defender, attnet(fresh.eval(), xv, eta), yv)
        c = error_rate(defender, attnet(attacker, xv, eta), yv)
        return {"probe_fresh_error": f, "probe_cotrained_error": c, "exploitability": f - c,
                "probe_attacker_epochs": len(hist)}

    return probe


def _objectives(mode: str, defender: nn.Module, attacker: nn.Module, cfg: GameParams, eta: float,
                parts: dict) -> tuple:
    """`mode`'s (attacker objective, defender loss), each a function of a minibatch; minimax's
    defender loss writes f and its penalty into `parts`."""
    c = cfg.clean_weight

    def attacker_objective(xb, yb):
        if mode == "maximin":
            return maximin_attacker_objective(defender, attacker, xb, yb, eta, cfg.gamma_maximin)
        return game_value(defender, attacker, xb, yb, eta)

    def defender_loss(xb, yb):
        if mode == "minimax":
            return minimax_defender_objective(defender, attacker, xb, yb, eta, c, cfg.gamma, parts)
        return defender_objective(defender, attacker, xb, yb, eta, c)

    return attacker_objective, defender_loss


def _step(xb, yb, objectives: tuple, defender: tuple, attacker: tuple, cfg: GameParams,
          where: str) -> tuple[float, torch.Tensor]:
    """One minibatch of the game: cfg.k ascent steps of the attacker, then one descent step of the
    defender. `defender` and `attacker` are (parameters, optimizer); returns the defender's loss
    and the attacker's objective at its last ascent step."""
    attacker_objective, defender_loss = objectives
    (u, opt_u), (v, opt_v) = defender, attacker
    for _ in range(cfg.k):
        obj = attacker_objective(xb, yb)
        check_finite(obj.detach().abs(), f"{where} (attacker)", cfg.max_loss)
        opt_v.zero_grad(set_to_none=True)
        (-obj).backward(inputs=v)
        opt_v.step()
    loss = defender_loss(xb, yb)
    d = check_finite(loss, f"{where} (defender)", cfg.max_loss)
    opt_u.zero_grad(set_to_none=True)
    loss.backward(inputs=u)
    opt_u.step()
    return d, obj


def _epoch_metrics(mode: str, sums: dict, count: int) -> dict:
    """The epoch's mean defender loss and attacker objective; minimax adds its penalty and how much
    the look-ahead term weighs against f (0 = minimax is alt)."""
    metrics = {k: s / max(count, 1) for k, s in sums.items() if k not in ("f", "penalty")}
    if mode == "minimax":
        metrics["penalty"] = sums["penalty"] / max(count, 1)
        metrics["penalty_ratio"] = sums["penalty"] / max(sums["f"], 1e-12)
    return metrics
