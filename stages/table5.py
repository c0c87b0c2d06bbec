"""Stage table5-<defender>: the paper's Table 5 beyond the main eta. At each eta of `table5.etas`
a fresh AttNet-curr is trained against the frozen defender at that eta (the paper's protocol),
and the defender's error is measured under it and under FGSM-curr on the evaluation's images.
The main eta's cells come from the defender's evaluation.

And the paper's own attacker network (`attnet-paper:<arch>`), at attack.eta and each of those
etas: the same architecture trained the paper's way (PAPER_ATTACKER: the tanh output
clip(x + eta tanh(h)), the defender's own cross-entropy as its loss, no warm start, no
saturation penalty, the default initialisation), so that Table 5's AttNet cells compare like
with like beside the study's stronger attacker.

    python stages/table5.py --defender D --data DIR --model MODEL --out FILE
"""
import argparse

from advgame.artifacts import save_json
from advgame.attacks.attnet import attnet
from advgame.attacks.attnet_training import train_attacker
from advgame.attacks.fgsm import fgsm
from advgame.config import eta_key
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.defenses.validation import FOOLING
from advgame.evaluation.stats import cell
from advgame.pipeline.stage import run_stage
from advgame.training import training_record

# what makes attacker params the paper's attacker (the other keys: attacker's, e.g. its schedule)
PAPER_ATTACKER = {"param": "tanh", "loss": "ce", "warmup_epochs": 0, "penalty": 0.0, "init_scale": 1.0}
PAPER = "attnet-paper"


def body(ctx, a):
    name = a.defender
    p, dev, t5 = ctx.params, ctx.device, ctx.params.table5
    defender = load_defender(name, a.model, dev)
    x, y = load_split(a.data, "train")
    xt, yt = load_split(a.data, "test", p.eval.n_test)
    xt, yt = xt.to(dev), yt.to(dev)
    results: dict = {"fgsm-curr": {}, f"attnet-curr:{t5.arch}": {}, f"{PAPER}:{t5.arch}": {}}
    final, training, val = {}, {}, load_split(a.data, "val")

    def attacked(cfg, eta, result, model):
        h, hist = train_attacker(defender.model, defender.attack_loss, x, y, t5.arch, cfg, eta,
                                 x.shape[1:], dev, val=val)
        k = eta_key(eta)
        results[result][k] = cell([defender.errors(attnet(h, xt, eta), yt, clean=False)])
        training[f"{model}:{t5.arch}@{name}:eta{k}"] = training_record(hist, cfg.epochs, FOOLING,
                                                                       higher_is_better=True)
        return results[result][k]["error"], len(hist)

    paper = p.attacker.model_copy(update=PAPER_ATTACKER)
    for eta in dict.fromkeys([p.attack.eta, *t5.etas]):
        k = eta_key(eta)
        final[f"paper_attnet_{k}_error"], final[f"paper_attnet_{k}_epochs"] = attacked(
            paper, eta, f"{PAPER}:{t5.arch}", PAPER)
        if eta not in t5.etas:
            continue  # the study's attacker at attack.eta: the evaluation's
        final[f"attnet_{k}_error"], final[f"attnet_{k}_epochs"] = attacked(
            p.attacker, eta, f"attnet-curr:{t5.arch}", "attnet")
        results["fgsm-curr"][k] = cell([defender.errors(
            fgsm(defender.model, xt, yt, eta, p.eval.batch, defender.attack_loss), yt, clean=False)])
    save_json({"defender": name, "results": results, "training": training}, a.out)
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defender", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the defender's checkpoint")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage(f"table5-{a.defender}", lambda ctx: body(ctx, a),
              sections=["run", "attack", "attacker", "table5", "eval"])
