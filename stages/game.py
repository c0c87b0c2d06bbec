"""Stage alt | minimax | maximin: the defender (from u_0) plays against a fresh attacker network."""
import argparse

from advgame.artifacts import load_checkpoint, save_checkpoint, write_csv
from advgame.attacker import game_attacker
from advgame.attacks import attnet
from advgame.data import load_split
from advgame.game import MODES, play
from advgame.models import attacker_meta, classifier_meta, model_from_checkpoint
from advgame.names import DATA, model_path
from advgame.stage import run_stage
from advgame.training import error_rate

BASELINE = model_path("baseline")


def body(ctx, mode):
    p, g, eta = ctx.params, ctx.params.game, ctx.params.attack.eta
    x, y = load_split(DATA, "train")
    xt, yt = load_split(DATA, "test")
    base = load_checkpoint(BASELINE)
    defender = model_from_checkpoint(base, "classifier")
    attacker = game_attacker(g.attacker_arch, x.shape[1:], p.attacker, defender, x, y, eta, g.lr_attacker,
                             g.seed, ctx.device)
    hist = play(mode, defender, attacker, x, y, g, eta, ctx.device, log=ctx.log, xt=xt, yt=yt)
    # the convergence curves (paper: the three solvers compared on MNIST), for the report and DVC
    write_csv([{"epoch": e + 1, **h} for e, h in enumerate(hist)], f"reports/game/{mode}.csv")

    xt_d, yt_d = xt.to(ctx.device), yt.to(ctx.device)
    final = {"clean_error": error_rate(defender, xt_d, yt_d),
             "own_attnet_error": error_rate(defender, attnet(attacker, xt_d, eta), yt_d)}
    if mode == "minimax":
        final["penalty_ratio_last_epoch"] = hist[-1]["penalty_ratio"]
    meta = base["meta"]
    save_checkpoint(defender, classifier_meta(meta["arch"], x.shape, meta["classes"], defender=mode),
                    model_path(mode))
    att_path = f"models/{mode}-attacker.pt"
    save_checkpoint(attacker, attacker_meta(g.attacker_arch, x.shape, p.attacker.hidden, p.attacker.width,
                                            p.attacker.param, defender=mode, eta=eta), att_path)
    ctx.tracker.log_model(defender, mode, x[:2])
    ctx.tracker.log_artifact(att_path, "attacker")
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=MODES, required=True)
    mode = ap.parse_args().mode
    run_stage(mode, lambda ctx: body(ctx, mode), sections=["run", "attack", "attacker", "game"],
              deps=[DATA, BASELINE])
