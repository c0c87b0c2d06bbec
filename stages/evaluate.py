"""Stage eval-<defender>: the cross-evaluation row of one defender -> reports/eval/<defender>.json.

It reads only that defender, its own attackers and the cat-and-mouse rounds whose FGSM-k is a
column (`--fgsm-rounds`); the AttNet-transfer matrix is the `transfer` stage's."""
import argparse
import time
from pathlib import Path

from advgame import UserError
from advgame.artifacts import load_checkpoint, save_json
from advgame.data import load_split
from advgame.defenders import load_defender
from advgame.evaluate import Plan, evaluate_defender
from advgame.models import model_from_checkpoint
from advgame.names import DATA, attackers_dir, fgsm_source, model_path
from advgame.stage import run_stage
from advgame.training import progress



def _load(path, device):
    return model_from_checkpoint(load_checkpoint(path)).to(device).eval()


def attackers_of(defender: str, device) -> dict:
    """arch -> attacker network, every one the defender's attackers stage wrote."""
    found = sorted(Path(attackers_dir(defender)).glob("*.pt"))
    if not found:
        raise UserError(f"{attackers_dir(defender)}: no attacker found; run `dvc repro attackers-{defender}`")
    return {f.stem: _load(f, device) for f in found}


def body(ctx, name: str, rounds: list[int]):
    p, dev = ctx.params, ctx.device
    start = time.perf_counter()
    if not Path(model_path(name)).exists():
        raise UserError(f"{model_path(name)}: not found; run `dvc repro {name}` (or the stage that "
                        "trains this defender; `dvc stage list` names them)")
    x, y = load_split(DATA, "test", p.eval.n_test)
    x, y = x.to(dev), y.to(dev)
    defender = load_defender(name, model_path(name), dev)
    plan = Plan.from_params(
        p, fgsm_sources={k: _load(model_path(fgsm_source(k)), dev) for k in rounds},
        own_attackers=attackers_of(name, dev), transfer_source=_load(model_path("baseline"), dev),
        classes=int(defender.meta.get("classes", 10)) if defender.meta else 10,
        is_baseline=name == "baseline")
    bar = progress(iter(int, 1), f"eval {name}")
    out = evaluate_defender(defender, x, y, plan, progress=lambda m: bar.set_postfix_str(m))
    bar.close()
    seconds = round(time.perf_counter() - start, 2)
    res = out["results"]
    save_json({"defender": name, "results": res, "sanity": out["sanity"],
               "sanity_detail": out["sanity_detail"],
               "sanity_attack": out["sanity_attack"],
               "sanity_pgd_large_eta": out["sanity_pgd_large_eta"],
               **({"detector": out["detector"]} if "detector" in out else {}),
               "per_image": out["per_image"],
               "settings": {"n_test": len(x), "pgd_steps": p.eval.pgd_steps,
                            "pgd_restarts": p.eval.pgd_restarts, "seeds": p.eval.seeds,
                            "attacker_eta": p.attack.eta,
                            "strong_attacks": p.eval.strong_attacks,
                            "apgd_iters": p.eval.apgd_iters, "apgd_restarts": p.eval.apgd_restarts,
                            "square_queries": p.eval.square_queries,
                            "art_attacks": p.art.attacks, "art_n": min(p.art.n_test or len(x), len(x)),
                            "attacks_by_eta": out["attacks_by_eta"]}}, f"reports/eval/{name}.json")
    # timings go to the stage report and MLflow, not the results: the results' bytes must not
    # change when the same commit is rerun

    k = f"{p.attack.eta!r}"
    final = {"clean_error": res["clean"]["0"]["error"], "eval_seconds": seconds,
             **{f"seconds_{a}": t for a, t in out["seconds_by_attack"].items()}}
    for a in ("fgsm-curr", "pgd-curr", "worst-case"):
        if k in res.get(a, {}):
            final[f"{a}_error"] = res[a][k]["error"]
    for a, r in res.items():  # the whole row to MLflow, one metric per attack and eta
        for e, c in r.items():
            ctx.log({f"error.{a.replace(':', '.')}.{e}": c["error"]})
    ctx.tracker.log_artifact(f"reports/eval/{name}.json", "eval")
    return final


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--defender", required=True)
    ap.add_argument("--fgsm-rounds", default="", help="comma-separated k of the FGSM-k columns")
    a = ap.parse_args()
    try:
        ks = [int(k) for k in a.fgsm_rounds.split(",") if k]
    except ValueError:
        raise SystemExit(f"error [eval-{a.defender}]: bad --fgsm-rounds '{a.fgsm_rounds}'; use e.g. 1,2,5") from None
    run_stage(f"eval-{a.defender}", lambda ctx: body(ctx, a.defender, ks),
              sections=["run", "attack", "eval", "art"],
              deps=[DATA, model_path(a.defender), attackers_dir(a.defender), model_path("baseline"),
                    *[model_path(fgsm_source(k)) for k in ks]])
