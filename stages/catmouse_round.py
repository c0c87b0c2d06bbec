"""Stage round-K: u_K = u_(K-1) fine-tuned on clean + FGSM-K (the cat-and-mouse game, one round).

    python stages/catmouse_round.py --k K
"""
import argparse

from advgame import UserError
from advgame.artifacts import load_checkpoint, save_checkpoint, save_torch
from advgame.catmouse import play_round
from advgame.data import load_split
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.stage import run_stage

DATA = "data/prepared"


def body(ctx, k: int):
    p, cm = ctx.params, ctx.params.catmouse
    if not 1 <= k <= cm.rounds:
        raise UserError(f"--k {k}: must be between 1 and catmouse.rounds ({cm.rounds})")
    prev_path = "models/baseline.pt" if k == 1 else f"models/adv-fgsm-{k - 1}.pt"
    ckpt = load_checkpoint(prev_path)
    prev = model_from_checkpoint(ckpt, "classifier")
    x, y = load_split(DATA, "train")
    xt, yt = load_split(DATA, "test")
    model, metrics, z_test = play_round(prev, x, y, xt, yt, p.attack.eta, cm, ctx.device, log=ctx.log,
                                        desc=f"round {k}")
    meta = ckpt["meta"]
    path = f"models/adv-fgsm-{k}.pt"
    save_checkpoint(model, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=f"adv-fgsm-{k}",
                                           round=k, eta=p.attack.eta), path)
    save_torch({"x": z_test.cpu(), "y": yt.cpu()}, f"data/fgsm/fgsm-{k}-test.pt")
    if k == cm.rounds:
        ctx.tracker.log_model(model, f"adv-fgsm-{k}", x[:2])
    else:
        ctx.tracker.log_artifact(path, "model")
    return {key: float(v) for key, v in metrics.items()}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="one cat-and-mouse FGSM retraining round")
    ap.add_argument("--k", type=int, required=True, help="round number, 1..catmouse.rounds")
    k = ap.parse_args().k
    prev = "models/baseline.pt" if k == 1 else f"models/adv-fgsm-{k - 1}.pt"
    run_stage(f"round-{k}", lambda ctx: body(ctx, k), sections=["run", "attack", "catmouse"],
              deps=[DATA, prev])
