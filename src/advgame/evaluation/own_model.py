"""Evaluate a model that is not part of the study (issue 32): a researcher's own classifier
against the study's evaluation attacks, without adding a defense to the pipeline.

`evaluate_model(model, x, y, eta=0.3)` runs the cross-evaluation (`crosseval.evaluate_defender`)
on a `Defender` whose `model` and `classifier` are the user's model (x in [0, 1] -> logits),
with the plan of the params' `eval` section: FGSM-curr, PGD-curr at every eta, the strong set
(`eval.strong_attacks`) at the main eta, PGD at eta 1 for the sanity checks. The attacks that
need study artefacts (FGSM-k rounds, AttNet attackers, the transfer source) are not in the plan.
It returns the dict of a pipeline eval JSON (reports/eval/<defender>.json, docs/results.md) plus
`seconds`, as the defender's row of reports/results.json. The command is `advgame evaluate`
(advgame.cli).
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from advgame import UserError, attack_table, config
from advgame.artifacts import load_checkpoint
from advgame.attacks.target import Defender
from advgame.data import load_split
from advgame.evaluation.crosseval import Plan, _applies, _members, evaluate_defender, row_json
from advgame.models import CLASSIFIERS, build_classifier, model_from_checkpoint, state_mismatch
from advgame.names import DATA
from advgame.progress import Progress
from advgame.runtime import resolve_device


def load_params(path: str | Path | None) -> config.Params:
    """The params of a file; without one, ./params.yaml where it exists, else the defaults."""
    if path is None:
        path = Path("params.yaml")
        if not path.exists():
            return config.parse({})
    return config.load(path)


def _read(path: str | Path, what: str):
    """torch.load of a user's file (weights only: nothing in it is executed), one line on failure."""
    if not Path(path).exists():
        raise UserError(f"{path}: not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        msg = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:120]
        raise UserError(f"{path}: cannot be read as {what} ({type(e).__name__}: {msg})") from None


def load_data(data: str | Path | None, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images (0 = all) of a file holding x and y, or of the study's prepared test
    split (names.DATA, test.pt) when `data` is None."""
    if data is None:
        return load_split(DATA, "test", n)
    d = _read(data, "a data file (torch.save of {'x': x, 'y': y})")
    if not (isinstance(d, dict) and all(hasattr(d.get(k), "shape") for k in ("x", "y"))):
        raise UserError(f"{data}: not a data file; save a dict of tensors x (N, C, H, W) and y (N,), "
                        "e.g. torch.save({'x': x, 'y': y}, 'data.pt')")
    x, y = d["x"], d["y"]
    return (x[:n], y[:n]) if n else (x, y)


def _torchscript(path: Path) -> nn.Module | None:
    """A TorchScript model, or None when the file is not one."""
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception:  # torch raises RuntimeError or ValueError for a file of another kind
        return None


def load_model(path: str | Path, arch: str | None = None, x_shape=(1, 1, 28, 28), classes: int = 10) -> nn.Module:
    """A model from a file: an advgame checkpoint (its meta names the architecture), a plain
    state_dict (or {"state_dict": ...}) of `arch` from advgame.models, or a TorchScript file."""
    path = Path(path)
    if arch is not None and arch not in CLASSIFIERS:
        raise UserError(f"--arch: unknown architecture '{arch}'; allowed: {', '.join(CLASSIFIERS)}")
    if arch is None and (scripted := _torchscript(path)) is not None:
        return scripted.eval()
    raw = _read(path, "a checkpoint" if arch else "a checkpoint or TorchScript")
    if isinstance(raw, dict) and isinstance(raw.get("meta"), dict) and "state_dict" in raw:
        return model_from_checkpoint(load_checkpoint(path), "classifier").eval()
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise UserError(f"{path}: cannot be read as a checkpoint (no state_dict of tensors) nor as TorchScript")
    if arch is None:
        raise UserError(f"{path}: a plain state_dict; name its architecture with --arch "
                        f"({', '.join(CLASSIFIERS)})")
    c, side = int(x_shape[1]), int(x_shape[-1])
    model = build_classifier(arch, c, classes, side)
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise UserError(f"{path}: does not fit --arch {arch} on {c}x{side}x{side} images, {classes} classes: "
                        f"{mismatch}")
    model.load_state_dict(state)
    return model.eval()


def check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Refuse, in one line, data or a model the evaluation cannot use; returns the classes."""
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y) or not len(x):
        raise UserError(f"data: x must be (N, C, H, W) and y (N,) with the same N > 0; got x "
                        f"{list(x.shape)}, y {list(y.shape)}")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise UserError(f"data: labels y must be integer class indices; got {y.dtype}")
    if not x.is_floating_point() or not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise UserError(f"data: pixels must be floats in [0, 1] (the attacks' box); got {x.dtype} in "
                        f"[{x.min().item():g}, {x.max().item():g}]")
    try:
        with torch.no_grad():
            out = model(x[:2])
    except Exception as e:  # a shape mismatch is a RuntimeError from deep inside the model
        msg = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
        raise UserError(f"model: does not accept images of shape {list(x.shape[1:])} ({msg})") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(x[:2]) or out.shape[1] < 2:
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"model: must return logits of shape (N, classes); on {len(x[:2])} images it "
                        f"returned {got}")
    classes = int(out.shape[1])
    if y.min() < 0 or y.max() >= classes:
        raise UserError(f"data: labels must lie in 0..{classes - 1} (the model's {classes} classes); "
                        f"got {y.min().item()}..{y.max().item()}")
    return classes


def own_plan(p: config.Params, eta: float, etas: list[float] | None, classes: int) -> Plan:
    """The params' evaluation plan at the main eta `eta` (the strong set runs there) and the
    sweep `etas` (default: the main eta only), without the study's artefacts."""
    sweep = sorted({float(e) for e in (etas or [])} | {float(eta)})
    if any(not (0 < e <= 1) for e in sweep):
        raise UserError(f"eta: must lie in (0, 1]; got {', '.join(map(str, sweep))}")
    plan = Plan.from_params(p, classes=classes)
    plan.etas, plan.main_eta, plan.strong_etas = sweep, float(eta), [float(eta)]
    return plan


def _steps(defender: Defender, plan: Plan) -> int:
    """How many attack runs the plan makes (the progress total): each applicable entry and
    member per eta, the saturation rerun (at the main eta, when a cascade attack runs there)
    and the sanity run."""
    runs = sum(len(_members(a, plan)) for e in plan.etas for a in attack_table.ATTACKS
               if _applies(a, defender, plan, e))
    saturation = plan.saturation_n > 0 and any(a.cascade and _applies(a, defender, plan, plan.main_eta)
                                               for a in attack_table.ATTACKS)
    return 1 + runs + int(saturation)


def evaluate_model(model: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                   eta: float = 0.3, *, etas: list[float] | None = None, params=None, n: int = 0,
                   name: str = "own", device: str | None = None, show_progress: bool = True) -> dict:
    """Evaluate `model` (x in [0, 1] -> logits) on x, y (default: the study's prepared test
    split) against the study's evaluation attacks; returns the eval JSON's dict plus `seconds`.
    `params`: a Params, a params file, or None (./params.yaml or the defaults); `n` keeps the
    first n images (0 = the params' eval.n_main for the study's split, every image of yours)."""
    start = time.perf_counter()
    p = params if isinstance(params, config.Params) else load_params(params)
    if x is None or y is None:
        x, y = load_data(None, n or p.eval.n_main)
    elif n:
        x, y = x[:n], y[:n]
    dev = resolve_device(device or p.run.device)
    model = model.to(dev).eval()
    x, y = x.to(dev), y.to(dev)
    classes = check_inputs(model, x, y)
    plan = own_plan(p, eta, etas, classes)
    defender = Defender(name, model, model)
    bar = Progress(None, f"evaluate {name}", total=_steps(defender, plan), bar=None if show_progress else False,
                   every=None if show_progress else math.inf)

    started = []

    def step(msg: str) -> None:  # "eta <key>: <attack>" starts an attack run: the last one ended
        if msg.startswith("eta "):
            bar.update(len(started[-1:]))
            started.append(msg)
            bar.set_postfix_str(msg)

    out = evaluate_defender(defender, x, y, plan, progress=step)
    bar.update(len(started[-1:]))
    bar.close()
    return eval_json(name, out, p, plan, len(x), round(time.perf_counter() - start, 2))


def eval_json(name: str, out: dict, p: config.Params, plan: Plan, n: int, seconds: float) -> dict:
    """The keys of stages/evaluate.py's reports/eval/<defender>.json, in its order, plus seconds."""
    return {**row_json(name, out, p, n), "seconds": seconds}
