"""Stage alt | minimax | maximin: the defender (from u_0) plays against a fresh attacker network.

    python stages/game.py --mode M --data DIR --base MODEL --out MODEL --out-attacker MODEL --out-curve CSV
"""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint, write_csv
from advgame.attacks.attnet import attnet
from advgame.attacks.attnet_training import game_attacker
from advgame.data import load_split
from advgame.defense_table import names_for
from advgame.defenses.game import MODES, curve_rows, exploitability_probe, play
from advgame.defenses.validation import GAME
from advgame.models import attacker_meta, classifier_meta, model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import error_rate, training_record


def body(ctx, a):
    mode = a.mode
    p, g, eta = ctx.params, ctx.params.game, ctx.params.attack.eta
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test")
    base = load_checkpoint(a.base)
    defender = model_from_checkpoint(base, "classifier")
    attacker = game_attacker(g.attacker_arch, x.shape[1:], p.attacker, defender, x, y, eta, g.lr_attacker,
                             g.seed, ctx.device)
    val = load_split(a.data, "val")
    probe = exploitability_probe(x, y, val, g.attacker_arch, p.attacker, eta, ctx.device)
    hist = play(mode, defender, attacker, x, y, g, eta, ctx.device, log=ctx.log, xt=xt, yt=yt,
                val=val, probe=probe)
    # the convergence curves (paper: the three solvers compared on MNIST) and the exploitability
    # probe's (defenses/game.py), for the report and DVC
    write_csv(curve_rows(hist), a.out_curve)

    xt_d, yt_d = xt.to(ctx.device), yt.to(ctx.device)
    final = {"clean_error": error_rate(defender, xt_d, yt_d),
             "own_attnet_error": error_rate(defender, attnet(attacker, xt_d, eta), yt_d)}
    # the game has no early stop (defenses/game.py): it keeps its last epoch, at the cap
    final["training"] = {mode: training_record(hist, g.epochs, GAME, keep_last=True)}
    if mode == "minimax":
        final["penalty_ratio_last_epoch"] = hist[-1]["penalty_ratio"]
    meta = base["meta"]
    save_checkpoint(defender, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=mode),
                    a.out)
    att_path = a.out_attacker
    save_checkpoint(attacker, attacker_meta(g.attacker_arch, x.shape, p.attacker.hidden, p.attacker.width,
                                            p.attacker.param, defender=mode, eta=eta), att_path)
    ctx.tracker.log_model(defender, mode, x[:2])
    ctx.tracker.log_artifact(att_path, "attacker")
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=[m for m in names_for("stages/game.py") if m in MODES], required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="the defender's start (the baseline)")
    ap.add_argument("--out", required=True, help="the defender")
    ap.add_argument("--out-attacker", required=True, help="the game's final attacker")
    ap.add_argument("--out-curve", required=True, help="per-epoch losses (CSV)")
    a = ap.parse_args()
    run_stage(a.mode, lambda ctx: body(ctx, a), sections=["run", "attack", "attacker", "game"])
