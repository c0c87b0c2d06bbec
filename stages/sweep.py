"""Stage sweep-minimax-g<gamma>: one point of the minimax gamma sweep. It trains minimax at that
gamma exactly as the `minimax` stage does, then measures it as the evaluation does: clean error,
PGD-curr, a fresh AttNet-curr (the game's attacker architecture) and the attacker it was
co-trained with (`attnet-cotrained:<arch>`, report/exploitability.py) on the evaluation's images.
The study's own gamma is not a sweep stage: its point is the `minimax` evaluation itself, and
`alt` (gamma = 0) is the other end.

    python stages/sweep.py --gamma G --data DIR --base MODEL --out MODEL --out-json FILE
"""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint, save_json
from advgame.attacks.attnet import attnet
from advgame.attacks.attnet_training import game_attacker, train_attacker
from advgame.attacks.pgd import pgd
from advgame.data import load_split
from advgame.defenses.game import exploitability_probe, play
from advgame.defenses.loading import load_defender
from advgame.defenses.validation import FOOLING, GAME
from advgame.evaluation.stats import cell
from advgame.models import classifier_meta, model_from_checkpoint
from advgame.names import sweep_name
from advgame.pipeline.stage import run_stage
from advgame.training import training_record


def body(ctx, a):
    gamma = a.gamma
    p, eta, dev = ctx.params, ctx.params.attack.eta, ctx.device
    g = p.game.model_copy(update={"gamma": gamma})
    name = sweep_name(gamma)
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test", p.eval.n_test)
    base = load_checkpoint(a.base)
    model = model_from_checkpoint(base, "classifier")
    attacker = game_attacker(g.attacker_arch, x.shape[1:], p.attacker, model, x, y, eta, g.lr_attacker,
                             g.seed, dev)
    val = load_split(a.data, "val")
    probe = exploitability_probe(x, y, val, g.attacker_arch, p.attacker, eta, dev)
    hist = play("minimax", model, attacker, x, y, g, eta, dev, log=ctx.log, val=val, probe=probe)
    path = a.out
    meta = base["meta"]
    save_checkpoint(model, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=name,
                                           gamma=gamma), path)

    defender = load_defender(name, path, dev)
    xt, yt = xt.to(dev), yt.to(dev)
    e = p.eval
    fresh, fresh_hist = train_attacker(defender.model, defender.attack_loss, x, y, g.attacker_arch, p.attacker,
                                       eta, x.shape[1:], dev, val=val)
    masks = {
        "clean": defender.errors(xt, yt, clean=True),
        "pgd-curr": defender.errors(pgd(defender.model, xt, yt, eta, steps=e.pgd_steps,
                                        step_size=e.pgd_step_ratio * eta / e.pgd_steps,
                                        restarts=e.pgd_restarts, batch=e.batch), yt, clean=False),
        f"attnet-curr:{g.attacker_arch}": defender.errors(attnet(fresh, xt, eta), yt, clean=False),
        # the attacker the game ended with: fresh minus co-trained is the exploitability
        f"attnet-cotrained:{g.attacker_arch}": defender.errors(attnet(attacker, xt, eta), yt, clean=False),
    }
    out = {"gamma": gamma, "eta": eta, "penalty_ratio_last_epoch": hist[-1]["penalty_ratio"],
           "history": hist, "results": {a: cell([m]) for a, m in masks.items()},
           # the game has no early stop (defenses/game.py): it keeps its last epoch, at the cap
           "training": {name: training_record(hist, g.epochs, GAME, keep_last=True),
                        f"attnet:{g.attacker_arch}@{name}": training_record(
                            fresh_hist, p.attacker.epochs, FOOLING, higher_is_better=True)}}
    save_json(out, a.out_json)
    return {f"{a}_error": c["error"] for a, c in out["results"].items()} | {
        "penalty_ratio_last_epoch": out["penalty_ratio_last_epoch"]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gamma", type=float, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="minimax's start (the baseline)")
    ap.add_argument("--out", required=True, help="the minimax defender at this gamma")
    ap.add_argument("--out-json", required=True, help="its results")
    a = ap.parse_args()
    run_stage(sweep_name(a.gamma), lambda ctx: body(ctx, a), sections=["run", "attack", "attacker", "game", "eval"])
