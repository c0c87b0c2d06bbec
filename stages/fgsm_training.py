"""Stages fgsm-at and sens-fgsm: the baseline fine-tuned by online FGSM adversarial training,
without (fgsm-at) or with (sens-fgsm) the sensitivity term through the FGSM perturbation.

    python stages/fgsm_training.py --method fgsm-at|sens-fgsm --data DIR --base MODEL --out MODEL
"""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint
from advgame.attacks.fgsm import fgsm
from advgame.data import load_split
from advgame.defense_table import get, names_for
from advgame.defenses.fgsm_training import fgsm_at_objective, sens_fgsm_objective
from advgame.defenses.validation import ROBUST, robust_criterion
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import error_rate, fit, training_record


def body(ctx, a):
    p, method = ctx.params, a.method
    cfg, eta = getattr(p, get(method).section), p.attack.eta
    if method == "fgsm-at":
        objective = fgsm_at_objective(eta, cfg.a)
    else:
        objective = sens_fgsm_objective(eta, cfg.a, cfg.tau, cfg.surrogate)
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test")
    ckpt = load_checkpoint(a.base)
    model = model_from_checkpoint(ckpt, "classifier").to(ctx.device)
    xt_d, yt_d = xt.to(ctx.device), yt.to(ctx.device)

    def test_errors():
        return {"clean_error": error_rate(model, xt_d, yt_d),
                "fgsm_curr_error": error_rate(model, fgsm(model, xt_d, yt_d, eta), yt_d)}

    xv, yv = (t.to(ctx.device) for t in load_split(a.data, "val"))
    hist = fit(model, x, y, objective, cfg, ctx.device, log=ctx.log, desc=method,
               validate=robust_criterion(model, xv, yv, eta))
    final = {**test_errors(), "training": {method: training_record(hist, cfg.epochs, ROBUST)}}
    meta = ckpt["meta"]
    save_checkpoint(model, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=method),
                    a.out)
    ctx.tracker.log_model(model, method, x[:2])
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--method", choices=names_for("stages/fgsm_training.py"), required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="the model it fine-tunes (the baseline)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage(a.method, lambda ctx: body(ctx, a), sections=["run", "attack", get(a.method).section])
