"""Stage transfer: the AttNet-transfer matrix. Every defender's learned attackers (trained against
that defender) applied to every other defender at the main eta: forward passes only, so it is
cheap, and it lives apart from the per-defender evaluations so that retraining one defender
does not rerun the others' evaluations. -> reports/transfer.json
({"<target>": {"attnet-transfer:<source>:<arch>": {"<eta>": cell}}})"""
import argparse
from pathlib import Path

from advgame.artifacts import load_checkpoint, save_json
from advgame.attacks import attnet
from advgame.config import eta_key
from advgame.data import load_split
from advgame.defenders import load_defender
from advgame.evaluate import cell
from advgame.models import model_from_checkpoint
from advgame.names import DATA, TRANSFER, attackers_dir, model_path
from advgame.stage import run_stage


def body(ctx, names: list[str]):
    p, dev, eta = ctx.params, ctx.device, ctx.params.attack.eta
    xt, yt = load_split(DATA, "test", p.eval.n_test)
    xt, yt = xt.to(dev), yt.to(dev)
    # every attacker's examples once (they do not depend on the target), then each target
    examples = {}
    for src in names:
        for f in sorted(Path(attackers_dir(src)).glob("*.pt")):
            h = model_from_checkpoint(load_checkpoint(f), "attacker").to(dev).eval()
            examples[(src, f.stem)] = attnet(h, xt, eta, p.eval.batch)
    out, k = {}, eta_key(eta)
    for target in names:
        d = load_defender(target, model_path(target), dev)
        out[target] = {f"attnet-transfer:{src}:{arch}": {k: cell([d.errors(z, yt, clean=False, batch=p.eval.batch)])}
                       for (src, arch), z in examples.items() if src != target}
    save_json(out, TRANSFER)
    return {"cells": sum(len(v) for v in out.values())}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defenders", required=True, help="comma-separated final defenders")
    names = ap.parse_args().defenders.split(",")
    run_stage("transfer", lambda ctx: body(ctx, names), sections=["run", "attack", "eval"],
              deps=[DATA, *[model_path(d) for d in names], *[attackers_dir(d) for d in names]])
