"""Stage strength-<defender>: the attack-strength curve of a defender with a detector (MagNet):
pgd-adaptive's error at attack.eta on the evaluation's images against its PGD steps and guided
starts (evaluation/strength.py's STEPS x STARTS, plus the evaluation's own eval.pgd_steps and
eval.adaptive_starts), each setting from scratch, and the union over the grid.
-> reports/strength/<defender>.json

    python stages/strength.py --defender D --data DIR --model MODEL --out FILE
"""
import argparse

from advgame.artifacts import save_json
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.evaluation.strength import strength_report
from advgame.pipeline.stage import run_stage
from advgame.training import progress


def body(ctx, a):
    p, dev = ctx.params, ctx.device
    defender = load_defender(a.defender, a.model, dev)
    x, y = load_split(a.data, "test", p.eval.n_test)
    x, y = x.to(dev), y.to(dev)
    out, seconds = strength_report(defender, x, y, p.attack.eta, p.eval.pgd_steps, p.eval.adaptive_starts,
                                   tuple(p.eval.adaptive_weights), seed=p.run.seed, batch=p.eval.batch,
                                   wrap=lambda it: progress(it, f"strength {a.defender}"))
    save_json(out, a.out)  # each setting's seconds go to the stage's timing instead
    return {"union_error": out["union"]["error"], "saturated": out["saturated"], "settings": len(out["grid"]),
            **seconds}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--defender", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the defender's checkpoint")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    run_stage(f"strength-{a.defender}", lambda ctx: body(ctx, a), sections=["run", "attack", "eval"])
