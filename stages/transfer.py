"""Stage transfer: the AttNet-transfer matrix. Every defender's learned attackers (trained against
that defender) applied to every other defender at the main eta: forward passes only, so it is
cheap, and it lives apart from the per-defender evaluations so that retraining one defender
does not rerun the others' evaluations. -> reports/transfer.json
({"<target>": {"attnet-transfer:<source>:<arch>": {"<eta>": cell}}})

    python stages/transfer.py --data DIR --models M1,M2,.. --attackers DIR1,DIR2,.. --out FILE

A defender is named by its checkpoint's file name (models/minimax.pt is minimax)."""
import argparse
from pathlib import Path

from advgame.artifacts import load_checkpoint, save_json
from advgame.attacks.attnet import attnet
from advgame.config import eta_key
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.evaluation.stats import cell
from advgame.models import model_from_checkpoint
from advgame.pipeline.stage import run_stage


def body(ctx, a):
    models = dict(zip([Path(m).stem for m in a.models.split(",")], a.models.split(",")))
    attackers = dict(zip(models, a.attackers.split(",")))
    names = list(models)
    p, dev, eta = ctx.params, ctx.device, ctx.params.attack.eta
    xt, yt = load_split(a.data, "test", p.eval.n_test)
    xt, yt = xt.to(dev), yt.to(dev)
    # every attacker's examples once (they do not depend on the target), then each target
    examples = {}
    for src in names:
        for f in sorted(Path(attackers[src]).glob("*.pt")):
            h = model_from_checkpoint(load_checkpoint(f), "attacker").to(dev).eval()
            examples[(src, f.stem)] = attnet(h, xt, eta, p.eval.batch)
    out, k = {}, eta_key(eta)
    for target in names:
        d = load_defender(target, models[target], dev)
        out[target] = {f"attnet-transfer:{src}:{arch}": {k: cell([d.errors(z, yt, clean=False, batch=p.eval.batch)])}
                       for (src, arch), z in examples.items() if src != target}
    save_json(out, a.out)
    return {"cells": sum(len(v) for v in out.values())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", required=True, help="comma-separated checkpoints of the final defenders")
    ap.add_argument("--attackers", required=True, help="their attackers' folders, in the same order")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if len(a.models.split(",")) != len(a.attackers.split(",")):
        raise SystemExit("error [transfer]: --models and --attackers must name as many entries")
    run_stage("transfer", lambda ctx: body(ctx, a), sections=["run", "attack", "eval"])
