"""Stage eval-<defender>: the cross-evaluation row of one defender -> reports/eval/<defender>.json.

It reads only that defender, its own attackers and the cat-and-mouse rounds whose FGSM-k is a
column (`--fgsm-sources`); the AttNet-transfer matrix is the `transfer` stage's.

    python stages/evaluate.py --defender D --data DIR --model MODEL --attackers DIR \
        [--fgsm-sources 1=models/baseline.pt,2=models/adv-fgsm-1.pt] --out FILE
"""
import argparse
import time
from pathlib import Path

from advgame import UserError, attack_table
from advgame.artifacts import load_checkpoint, producer_hint, save_json
from advgame.data import load_split
from advgame.defenses.loading import load_defender
from advgame.evaluation.crosseval import Plan, evaluate_defender, row_json
from advgame.models import model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import progress


def _load(path, device, kind):
    return model_from_checkpoint(load_checkpoint(path), kind).to(device).eval()


def attackers_of(defender: str, folder: str, device) -> dict:
    """arch -> attacker network, every one the defender's attackers stage wrote."""
    found = sorted(Path(folder).glob("*.pt"))
    if not found:
        raise UserError(f"{folder}: no attacker found; {producer_hint(folder)}")
    return {f.stem: _load(f, device, "attacker") for f in found}


def body(ctx, args, sources: dict[int, str]):
    p, dev, name = ctx.params, ctx.device, args.defender
    start = time.perf_counter()
    if not Path(args.model).exists():
        raise UserError(f"{args.model}: not found; {producer_hint(args.model)}")
    x, y = load_split(args.data, "test", p.eval.n_main)
    x, y = x.to(dev), y.to(dev)
    defender = load_defender(name, args.model, dev)
    plan = Plan.from_params(
        p, fgsm_sources={k: _load(path, dev, "classifier") for k, path in sources.items()},
        own_attackers=attackers_of(name, args.attackers, dev),
        transfer_source=_load(args.transfer_source, dev, "classifier") if args.transfer_source else None,
        classes=int(defender.meta.get("classes", 10)) if defender.meta else 10,
        is_baseline=name == "baseline")
    bar = progress(iter(int, 1), f"eval {name}")
    out = evaluate_defender(defender, x, y, plan, progress=lambda m: bar.set_postfix_str(m))
    bar.close()
    seconds = round(time.perf_counter() - start, 2)
    res = out["results"]
    save_json(row_json(name, out, p, len(x)), args.out)
    # timings go to the stage report and MLflow, not the results: the results' bytes must not
    # change when the same commit is rerun

    k = f"{p.attack.eta!r}"
    final = {"clean_error": res["clean"]["0"]["error"], "eval_seconds": seconds,
             **{f"seconds_{a}": t for a, t in out["seconds_by_attack"].items()}}
    for a in (h.name for h in attack_table.headline() if not h.family and h.name != "clean"):
        if k in res.get(a, {}):
            final[f"{a}_error"] = res[a][k]["error"]
    for a, r in res.items():  # the whole row to MLflow, one metric per attack and eta
        for e, c in r.items():
            ctx.log({f"error.{a.replace(':', '.')}.{e}": c["error"]})
    ctx.tracker.log_artifact(args.out, "eval")
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--defender", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", required=True, help="the defender's checkpoint")
    ap.add_argument("--attackers", required=True, help="folder of its own attackers")
    ap.add_argument("--fgsm-sources", default="", help="k=checkpoint of each FGSM-k column's source, comma-separated")
    ap.add_argument("--transfer-source", default="", help="the undefended model of the pgd-transfer column")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    try:
        sources = {int(k): path for k, _, path in (s.partition("=") for s in a.fgsm_sources.split(",") if s)}
    except ValueError:
        raise SystemExit(f"error [eval-{a.defender}]: bad --fgsm-sources '{a.fgsm_sources}'; "
                         "use e.g. 1=models/baseline.pt,2=models/adv-fgsm-1.pt") from None
    run_stage(f"eval-{a.defender}", lambda ctx: body(ctx, a, sources), sections=["run", "attack", "eval", "art"])
