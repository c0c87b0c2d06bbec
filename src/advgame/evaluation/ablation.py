"""Sens-FGSM's ablations (issue 16, item 2): does its sensitivity term do the work, or does it
mask the gradient?

Every variant starts from the baseline and is trained with sens_fgsm's schedule and data (a,
optimizer, lr, epochs, batch, seed); only the named difference changes:

- `sens-off`, the control: see `objective`;
- `smooth`: the step eta * tanh(grad_x l / tau) in the forward pass too (sens_fgsm.tau);
- `tau` (named tau-<tau>): Sens-FGSM itself at another temperature of its surrogate.

Each one is then measured the way the evaluation measures a defender, on the evaluation's images
(the first eval.n_test test images) at attack.eta, with the evaluation's PGD settings and seeds:
clean, fgsm-curr, pgd-curr, fgsm-<k> (FGSM against the cat-and-mouse model u_(k-1)) and
pgd-transfer:baseline (PGD examples made against the undefended baseline). Output, per variant,
reports/ablation/<name>.json:
    {"name", "variant": {...}, "eta", "results": {"<attack>": {"<eta>": cell}},
     "per_image": {"<attack>": {"<eta>": masks.pack(mask)}}}
A per-image mask is that of the first attack seed (eval.seeds[0]); the cell averages every seed.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advgame import masks as masklib
from advgame.artifacts import load_checkpoint, save_checkpoint, save_json
from advgame.attacks.core import ce_loss
from advgame.attacks.fgsm import fgsm
from advgame.attacks.pgd import pgd
from advgame.config import EvalParams, Params, SensFgsmParams, eta_key
from advgame.data import load_split
from advgame.defenses.fgsm_training import (
    fgsm_at_objective,
    sens_fgsm_objective,
    smooth_sens_objective,
)
from advgame.defenses.loading import Defender, load_defender
from advgame.defenses.validation import ROBUST, robust_criterion
from advgame.evaluation.stats import cell
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.names import ablation_name
from advgame.training import Objective, fit, training_record

KINDS = ("sens-off", "smooth", "tau")


def objective(kind: str, eta: float, cfg: SensFgsmParams, tau: float | None = None) -> Objective:
    """The training objective of one variant.

    `sens-off` (the control) switches the sensitivity term off: the FGSM example is a constant of
    the parameters, which is the fgsm-at objective. Sens-FGSM with its surrogate off reduces
    exactly to that objective (sign has zero derivative, so nothing flows through the example;
    tests/test_ablation.py checks the gradients agree), so this one control also stands for
    "surrogate off": a separate stage would train the same model twice.
    `smooth` keeps the sensitivity term but makes the objective differentiable everywhere (tanh
    step forward and backward, no straight-through). `tau` is Sens-FGSM at temperature `tau`,
    with sens_fgsm.surrogate as the defender has it."""
    if kind == "sens-off":
        return fgsm_at_objective(eta, cfg.a)
    if kind == "smooth":
        return smooth_sens_objective(eta, cfg.a, cfg.tau)
    if kind == "tau":
        if tau is None:
            raise ValueError("the tau variant needs a tau")
        return sens_fgsm_objective(eta, cfg.a, tau, cfg.surrogate)
    raise ValueError(f"unknown ablation variant {kind!r}; allowed: {', '.join(KINDS)}")


def describe(kind: str, cfg: SensFgsmParams, tau: float | None = None) -> dict:
    """What the variant changes, for the JSON and the checkpoint's meta."""
    out = {"kind": kind, "sensitivity": kind != "sens-off",
           "forward_step": "tanh" if kind == "smooth" else "sign",
           "tau": None if kind == "sens-off" else (cfg.tau if kind == "smooth" else tau),
           "surrogate": cfg.surrogate if kind == "tau" else None}
    return out | {k: getattr(cfg, k) for k in ("a", "optimizer", "lr", "schedule", "epochs", "batch", "seed")}


def measure(defender: Defender, x: torch.Tensor, y: torch.Tensor, eta: float, e: EvalParams,
            fgsm_sources: dict[int, nn.Module], baseline: nn.Module) -> dict[str, list[torch.Tensor]]:
    """attack -> one error mask per attack seed (the deterministic attacks repeat theirs, as the
    evaluation does), every attack at `eta`."""
    S = e.seeds
    err = lambda xa, clean=False: defender.errors(xa, y, clean, e.batch)  # noqa: E731

    def pgd_on(target: nn.Module, seed: int, loss=ce_loss) -> torch.Tensor:
        return pgd(target, x, y, eta, steps=e.pgd_steps, step_size=e.pgd_step_ratio * eta / e.pgd_steps,
                   restarts=e.pgd_restarts, seed=seed, batch=e.batch, loss=loss)

    out = {"clean": [err(x, clean=True)]}
    for k, src in fgsm_sources.items():
        out[f"fgsm-{k}"] = [err(fgsm(src, x, y, eta, e.batch))] * len(S)
    out["fgsm-curr"] = [err(fgsm(defender.model, x, y, eta, e.batch, defender.attack_loss))] * len(S)
    out["pgd-curr"] = [err(pgd_on(defender.model, s, defender.attack_loss)) for s in S]
    out["pgd-transfer:baseline"] = [err(pgd_on(baseline, s)) for s in S]
    return out


def result(name: str, variant: dict, eta: float, masks: dict[str, list[torch.Tensor]]) -> dict:
    """The reports/ablation/<name>.json object (module docstring)."""
    key = lambda a: "0" if a == "clean" else eta_key(eta)  # noqa: E731
    return {"name": name, "variant": variant, "eta": eta,
            "results": {a: {key(a): cell(ms)} for a, ms in masks.items()},
            "per_image": {a: {key(a): masklib.pack(ms[0].cpu().tolist())} for a, ms in masks.items()}}


def _load(path: str, device) -> nn.Module:
    return model_from_checkpoint(load_checkpoint(path), "classifier").to(device).eval()


def run_ablation(p: Params, kind: str, tau: float | None, data: str, base_path: str,
                 sources: dict[int, str], out: str, out_json: str, device="cpu",
                 log: Callable[[dict, int | None], None] | None = None) -> dict:
    """The stage's work: train the variant from the baseline checkpoint `base_path`, save it to
    `out`, measure it, write `out_json`. `sources` maps k of each FGSM-k attack to the checkpoint
    of its source u_(k-1). Returns the final metrics."""
    cfg, eta, name = p.sens_fgsm, p.attack.eta, ablation_name(kind, tau)
    variant = describe(kind, cfg, tau)
    x, y = load_split(data, "train")
    xt, yt = load_split(data, "test", p.eval.n_test)
    xt, yt = xt.to(device), yt.to(device)
    base = load_checkpoint(base_path)
    model = model_from_checkpoint(base, "classifier").to(device)

    xv, yv = (t.to(device) for t in load_split(data, "val"))
    hist = fit(model, x, y, objective(kind, eta, cfg, tau), cfg, device, log=log, desc=f"ablation {name}",
               validate=robust_criterion(model, xv, yv, eta))
    path = out
    meta = base["meta"]
    save_checkpoint(model, classifier_meta(meta["arch"], x.shape, meta["classes"],
                                           defender=f"ablation-{name}", ablation=variant), path)

    defender = load_defender(f"ablation-{name}", path, device)
    models = {k: _load(src, device) for k, src in sources.items()}
    masks = measure(defender, xt, yt, eta, p.eval, models, _load(base_path, device))
    res = {**result(name, variant, eta, masks),
           "training": {f"ablation-{name}": training_record(hist, cfg.epochs, ROBUST)}}
    save_json(res, out_json)
    return {f"{a}_error": next(iter(r.values()))["error"] for a, r in res["results"].items()}
