"""Stage attackers-<defender>: AttNet-curr, one attacker per architecture trained from scratch
against the frozen defender; the evaluation replays them (AttNet-curr and AttNet-transfer).

    python stages/attackers.py --defender D --data DIR --model MODEL --out DIR
"""
import argparse
import re

from advgame.artifacts import save_checkpoint
from advgame.attacks.attnet import attnet
from advgame.attacks.attnet_training import diagnostics, train_attacker
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.defenses.validation import FOOLING
from advgame.models import attacker_meta
from advgame.pipeline.stage import run_stage
from advgame.training import training_record


def body(ctx, args):
    name, out = args.defender, args.out
    p, eta = ctx.params, ctx.params.attack.eta
    a = p.attacker
    defender = load_defender(name, args.model, ctx.device)
    x, y = load_split(args.data, "train")
    xt, yt = load_split(args.data, "test", p.eval.n_test)  # the evaluation's images
    xt_d, yt_d = xt.to(ctx.device), yt.to(ctx.device)

    def errors(xa, ya):
        return defender.errors(xa, ya, clean=False)

    final = {"clean_error": float(defender.errors(xt_d, yt_d, clean=True).float().mean())}
    val, trained, training = load_split(args.data, "val"), {}, {}
    for arch in a.archs:
        def log(m, step, arch=arch):
            ctx.log({f"{arch}_{k}": v for k, v in m.items()}, step)

        attacker, hist = train_attacker(defender.model, defender.attack_loss, x, y, arch, a, eta,
                                        x.shape[1:], ctx.device, log=log, errors=errors, val=val)
        training[f"attnet:{arch}@{name}"] = training_record(hist, a.epochs, FOOLING, higher_is_better=True)
        trained[arch] = attacker
        final[f"attnet_{arch}_test_error"] = float(errors(attnet(attacker, xt_d, eta), yt_d).float().mean())
        d = diagnostics(attacker, xt_d, eta)
        final.update({f"attnet_{arch}_pert_std": d["pert_std"], f"attnet_{arch}_saturated": d["saturated"],
                      f"attnet_{arch}_epochs": len(hist), f"attnet_{arch}_seconds": hist[-1]["seconds"]})
    # saved only once every attacker trained: a divergence leaves nothing behind
    for arch, attacker in trained.items():
        path = f"{out}/{arch}.pt"
        meta = attacker_meta(arch, x.shape, a.hidden, a.width, a.param, defender=name, eta=eta)
        save_checkpoint(attacker, meta, path)
        ctx.tracker.log_artifact(path, "attackers")
    return {**final, "training": training}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--defender", required=True, help="a final defender, e.g. baseline, minimax")
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the defender's checkpoint")
    ap.add_argument("--out", required=True, help="folder of its attackers, one file per arch")
    args = ap.parse_args()
    name = args.defender
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise SystemExit(f"error [attackers]: bad --defender '{name}'; use a defender name such as baseline")
    run_stage(f"attackers-{name}", lambda ctx: body(ctx, args), sections=["run", "attack", "attacker"])
