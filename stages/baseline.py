"""Stage baseline: u_0, the classifier trained on clean data.

    python stages/baseline.py --data DIR --out MODEL
"""
import argparse

from advgame.artifacts import save_checkpoint
from advgame.config import classifier_arch
from advgame.data import load_split
from advgame.defenses.validation import CLEAN, clean_criterion
from advgame.models import build_classifier, classifier_meta
from advgame.pipeline.stage import run_stage
from advgame.training import error_rate, fit, standard_objective, training_record


def body(ctx, a):
    p = ctx.params
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test")
    arch = classifier_arch(p)
    classes = int(max(y.max(), yt.max())) + 1
    model = build_classifier(arch, x.shape[1], classes, x.shape[2])
    xt_d, yt_d = xt.to(ctx.device), yt.to(ctx.device)
    xv, yv = (t.to(ctx.device) for t in load_split(a.data, "val"))
    cfg = p.baseline
    hist = fit(model, x, y, standard_objective, cfg, ctx.device, log=ctx.log, desc="baseline",
               validate=clean_criterion(model, xv, yv))
    err = error_rate(model, xt_d, yt_d)
    save_checkpoint(model, classifier_meta(arch, x.shape, classes, defender="baseline"), a.out)
    ctx.tracker.log_model(model, "baseline", x[:2])
    return {"clean_error": err,
            "training": {"baseline": training_record(hist, cfg.epochs, CLEAN)}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage("baseline", lambda ctx: body(ctx, a), sections=["run", "classifier", "baseline"])
