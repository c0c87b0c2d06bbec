"""Stage round-K: u_K = u_(K-1) fine-tuned on clean + FGSM-K (the cat-and-mouse game, one round).

    python stages/catmouse_round.py --k K --data DIR --prev MODEL --out MODEL --out-fgsm FILE
"""
import argparse

from advgame import UserError
from advgame.artifacts import load_checkpoint, save_checkpoint, save_torch
from advgame.data import load_split
from advgame.defenses.catmouse import play_round
from advgame.defenses.validation import CLEAN
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import training_record


def body(ctx, a):
    p, cm, k = ctx.params, ctx.params.catmouse, a.k
    if not 1 <= k <= cm.rounds:
        raise UserError(f"--k {k}: must be between 1 and catmouse.rounds ({cm.rounds})")
    ckpt = load_checkpoint(a.prev)
    prev = model_from_checkpoint(ckpt, "classifier")
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test", p.eval.n_test)  # the evaluation's images
    model, metrics, z_test, hist = play_round(prev, x, y, xt, yt, p.attack.eta, cm, ctx.device, log=ctx.log,
                                              desc=f"round {k}", val=load_split(a.data, "val"))
    meta = ckpt["meta"]
    save_checkpoint(model, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=f"adv-fgsm-{k}",
                                           round=k, eta=p.attack.eta), a.out)
    save_torch({"x": z_test.cpu(), "y": yt.cpu()}, a.out_fgsm)
    if k == cm.rounds:
        ctx.tracker.log_model(model, f"adv-fgsm-{k}", x[:2])
    else:
        ctx.tracker.log_artifact(a.out, "model")
    return {**{key: float(v) for key, v in metrics.items()}, "n_test": len(yt),
            "training": {f"round-{k}": training_record(hist, cm.epochs, CLEAN)}}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one cat-and-mouse FGSM retraining round")
    ap.add_argument("--k", type=int, required=True, help="round number, 1..catmouse.rounds")
    ap.add_argument("--data", required=True)
    ap.add_argument("--prev", required=True, help="u_(k-1), the model FGSM-k is made against")
    ap.add_argument("--out", required=True, help="u_k")
    ap.add_argument("--out-fgsm", required=True, help="FGSM-k of the test split")
    a = ap.parse_args()
    run_stage(f"round-{a.k}", lambda ctx: body(ctx, a), sections=["run", "attack", "catmouse"])
