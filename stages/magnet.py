"""Stage magnet: MagNet (Meng & Chen 2017) around the frozen baseline classifier.

Trains the denoising autoencoder (reformer) on the first 90% of the training split, sets the
detector threshold on the last 10% (held out) so that a fraction `magnet.fpr` of it is
rejected, and saves models/magnet.pt (classifier state_dict + reformer + meta).
The final PGD-40 errors are on the first 200 test images (the evaluation stage attacks the whole
test split): grey-box = PGD against the bare classifier, the example then passed through
MagNet; white-box = PGD through the reformer with the detector penalty (magnet.detector_weight).
A rejected clean image is an error; a rejected adversarial image is defended. MLflow gets the
whole defense (defenses.magnet.MagNet: reformer, classifier and detector in one module).

    python stages/magnet.py --data DIR --base MODEL --out MODEL
"""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint
from advgame.attacks.pgd import pgd
from advgame.data import load_split
from advgame.defenses.magnet import (
    MagNet,
    Reformer,
    build_defender,
    denoising_objective,
    magnet_meta,
    recon_errors,
    threshold_for,
)
from advgame.defenses.validation import RECON
from advgame.models import model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import fit, training_record

PGD_N, PGD_STEPS = 200, 40


def body(ctx, a):
    p, cfg = ctx.params, ctx.params.magnet
    eta = p.attack.eta
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test")
    x_hold = load_split(a.data, "val")[0].to(ctx.device)  # the early stop and the detector's threshold
    ckpt = load_checkpoint(a.base)
    classifier = model_from_checkpoint(ckpt, "classifier").to(ctx.device).eval()
    ae = Reformer(x.shape[1])
    hist = fit(ae, x, y, denoising_objective(cfg.noise, cfg.seed), cfg, ctx.device, log=ctx.log,
               desc="magnet reformer", validate=lambda: float(recon_errors(ae, x_hold).mean()))
    hold_err = recon_errors(ae, x_hold)
    threshold = threshold_for(hold_err, cfg.fpr)
    meta = magnet_meta({**ckpt["meta"], "defender": "magnet"}, ae, threshold, cfg.detector_weight,
                       cfg.fpr, cfg.noise)
    save_checkpoint(classifier, meta, a.out,
                    reformer={k: v.detach().cpu() for k, v in ae.state_dict().items()})

    d = build_defender("magnet", classifier, ae, threshold, cfg.detector_weight, meta)
    xt, yt = xt.to(ctx.device), yt.to(ctx.device)
    xa, ya = xt[:PGD_N], yt[:PGD_N]
    grey = pgd(d.classifier, xa, ya, eta, steps=PGD_STEPS)
    white = pgd(d.model, xa, ya, eta, steps=PGD_STEPS, loss=d.attack_loss)
    out = {
        "clean_error": float(d.errors(xt, yt, clean=True).float().mean()),
        "false_positive_rate": float((hold_err > threshold).float().mean()),
        "test_rejection_rate": float(d.reject(xt).float().mean()),
        "threshold": threshold,
        "greybox_pgd_error": float(d.errors(grey, ya, clean=False).float().mean()),
        "whitebox_pgd_error": float(d.errors(white, ya, clean=False).float().mean()),
        # how often each attack is caught by the detector (detected = defended)
        "greybox_detected": float(d.reject(grey).float().mean()),
        "whitebox_detected": float(d.reject(white).float().mean()),
        "training": {"magnet": training_record(hist, cfg.epochs, RECON)},
    }
    # the whole defense (reformer + classifier + detector), not its trained part alone
    ctx.tracker.log_model(MagNet(ae, classifier, threshold).eval(), "magnet", x[:2])
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="the frozen classifier (the baseline)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage("magnet", lambda ctx: body(ctx, a), sections=["run", "attack", "magnet"])
