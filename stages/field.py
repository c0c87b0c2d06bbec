"""Stage pgd-at / trades / fgsm-rs: a defense from the wider field, fine-tuned from the baseline.

    python stages/field.py --defense pgd-at|trades|fgsm-rs --data DIR --base MODEL --out MODEL

Per epoch it logs the training loss and the validation PGD-20 error (the early stop and the best
epoch, advgame.defenses.validation); no test image is seen before the model is chosen. The final `pgd_error` is
PGD-40 (step 2.5 * eta / 40, one random start) on the first 200 test images (the evaluation
stage attacks the whole test split).
"""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint
from advgame.attacks.pgd import pgd
from advgame.data import load_split
from advgame.defense_table import get, names_for
from advgame.defenses.field import objective_for
from advgame.defenses.validation import ROBUST, robust_criterion
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import error_rate, fit, training_record

FINAL_PGD_N, FINAL_PGD_STEPS = 200, 40


def pgd_error(model, x, y, eta, steps):
    return error_rate(model, pgd(model, x, y, eta, steps=steps), y)


def body(ctx, a):
    p, defense = ctx.params, a.defense
    eta = p.attack.eta
    cfg = getattr(p, get(defense).section)
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test")
    ckpt = load_checkpoint(a.base)
    model = model_from_checkpoint(ckpt, "classifier").to(ctx.device)
    xt, yt = xt.to(ctx.device), yt.to(ctx.device)
    xv, yv = (t.to(ctx.device) for t in load_split(a.data, "val"))
    hist = fit(model, x, y, objective_for(defense, p, eta), cfg, ctx.device, log=ctx.log, desc=defense,
               validate=robust_criterion(model, xv, yv, eta))
    clean = error_rate(model, xt, yt)
    robust = pgd_error(model, xt[:FINAL_PGD_N], yt[:FINAL_PGD_N], eta, FINAL_PGD_STEPS)
    m = ckpt["meta"]
    meta = classifier_meta(m["arch"], x.shape, m["classes"], defender=defense, eta=eta)
    save_checkpoint(model, meta, a.out)
    ctx.tracker.log_model(model, defense, x[:2])
    return {"clean_error": clean, "pgd_error": robust,
            "training": {defense: training_record(hist, cfg.epochs, ROBUST)}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Train a defense from the wider field.")
    ap.add_argument("--defense", required=True, choices=names_for("stages/field.py"))
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="the model it fine-tunes (the baseline)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage(a.defense, lambda ctx: body(ctx, a), sections=["run", "attack", get(a.defense).section])
