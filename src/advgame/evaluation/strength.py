"""The attack-strength curve of a defender with a detector (issue 31): the worst-case error of
`pgd-adaptive` against its PGD steps and its guided starts, each setting run from scratch (no
carry from other settings or etas), plus the union over the grid, so that the report shows
where the attack saturates. An image counts as an error the way the evaluation counts it: a
clean error (misclassified or rejected) or an adversarial input misclassified and accepted.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import torch

from advgame.attacks.adaptive import adaptive_pgd
from advgame.attacks.target import Defender
from advgame.evaluation.stats import cell

# the grid (with the evaluation's own eval.pgd_steps and eval.adaptive_starts always added): here,
# not in params.yaml, because a new params section means editing config.py, on which every stage
# depends. Cost, estimated (not measured on the study's MagNet): pgd-adaptive at 40 steps and 8
# starts takes ~26 s on 2 cores (500 images, eta 0.3); the time grows about linearly with the
# steps, and with the starts less than linearly (a start runs only on the images still standing:
# 0, 1 and 4 starts ~0.4, 0.6 and 0.9 of 8 starts' time), so the grid costs about
# (10 + 20 + 40 + 80) / 40 x (0.4 + 0.6 + 0.9 + 1) x 26 s ~ 4.7 min. On the conftest's tiny MagNet
# the whole grid took 15x its (40, 8) cell (52 s for 100 images, 1 thread). 2 starts (another
# ~1.2 min) is left out: the curve over 0, 1, 4, 8 already shows where the starts stop paying.
STEPS = (10, 20, 40, 80)
STARTS = (0, 1, 4, 8)  # 0 = the random start only
TOL = 0.005  # saturated: the largest setting within TOL of the union, doubling steps moves <= TOL


def grid(steps: Iterable[int], starts: Iterable[int]) -> list[tuple[int, int]]:
    """(steps, starts) of every setting, sorted, each once."""
    return [(s, k) for s in sorted(set(steps)) for k in sorted(set(starts))]


def strength_curve(defender: Defender, x: torch.Tensor, y: torch.Tensor, eta: float,
                   settings: list[tuple[int, int]], weights: tuple[float, ...], seed: int = 0,
                   batch: int = 500, wrap: Callable = lambda it: it) -> dict:
    """({"grid": [{"steps", "starts", **cell}], "union": cell, "saturated"}, seconds): `seconds`
    maps `seconds_<steps>x<starts>` to each setting's wall seconds (the stage's timing, not its
    committed JSON); `wrap` wraps the loop over settings (a progress bar)."""
    if defender.detect is None:
        raise ValueError(f"{defender.name}: the strength curve needs a defender with a detector")
    clean = defender.errors(x, y, clean=True, batch=batch)
    union = clean.clone()
    rows, seconds = [], {}
    for steps, starts in wrap(settings):
        t0 = time.perf_counter()
        xa = adaptive_pgd(defender, x, y, eta, steps=steps, seed=seed, batch=batch, starts=starts,
                          weights=weights, pool=(x, y))
        mask = defender.errors(xa, y, clean=False, batch=batch) | clean
        union |= mask
        rows.append({"steps": steps, "starts": starts, **cell([mask])})
        seconds[f"seconds_{steps}x{starts}"] = round(time.perf_counter() - t0, 2)
    out = {"grid": rows, "union": cell([union])}
    out["saturated"] = saturated(rows, out["union"]["error"])
    return out, seconds


def strength_report(defender: Defender, x: torch.Tensor, y: torch.Tensor, eta: float, pgd_steps: int,
                    adaptive_starts: int, weights: tuple[float, ...], seed: int = 0, batch: int = 500,
                    wrap: Callable = lambda it: it, steps=STEPS, starts=STARTS) -> dict:
    """(reports/strength/<defender>.json, its seconds): the curve on the grid steps x starts, to
    which the evaluation's own setting (pgd_steps, adaptive_starts) is added."""
    settings = grid([*steps, pgd_steps], [*starts, adaptive_starts])
    out, seconds = strength_curve(defender, x, y, eta, settings, weights, seed, batch, wrap)
    return {"defender": defender.name, "eta": eta, "n": len(x), **out,
            "settings": {"steps": sorted({s for s, _ in settings}), "starts": sorted({k for _, k in settings}),
                         "weights": list(weights), "seed": seed,
                         "eval_setting": {"steps": pgd_steps, "starts": adaptive_starts}}}, seconds


def saturated(rows: list[dict], union: float, tol: float = TOL) -> bool:
    """The largest setting (most starts, then most steps) within tol of the union, and halving
    its steps (at the most starts) changes its error by at most tol."""
    if not rows:
        return False
    most = max(r["starts"] for r in rows)
    at = sorted((r for r in rows if r["starts"] == most), key=lambda r: r["steps"])
    top = at[-1]
    half = next((r for r in at if 2 * r["steps"] == top["steps"]), None)
    return union - top["error"] <= tol and half is not None and abs(top["error"] - half["error"]) <= tol
