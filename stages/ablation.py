"""Stage ablation-<name>: one Sens-FGSM ablation (sens-off, smooth or tau-<tau>), trained from the
baseline with sens_fgsm's schedule and measured as the evaluation does, at attack.eta on the
evaluation's images -> models/ablation/<name>.pt and reports/ablation/<name>.json
(src/advgame/ablation.py says what each variant changes)."""
import argparse

from advgame.ablation import KINDS, run_ablation
from advgame.names import DATA, ablation_name, fgsm_source, model_path
from advgame.stage import run_stage

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=KINDS, required=True)
    ap.add_argument("--tau", type=float, help="the tau variant's temperature")
    ap.add_argument("--fgsm-rounds", default="", help="comma-separated k of the FGSM-k attacks")
    a = ap.parse_args()
    if (a.variant == "tau") != (a.tau is not None):
        ap.error("--tau goes with --variant tau, and only with it")
    if a.tau is not None and a.tau <= 0:
        ap.error("--tau must be > 0")
    try:
        ks = [int(k) for k in a.fgsm_rounds.split(",") if k]
    except ValueError:
        ap.error(f"bad --fgsm-rounds '{a.fgsm_rounds}'; use e.g. 1,2,5")
    name = ablation_name(a.variant, a.tau)
    run_stage(f"ablation-{name}",
              lambda ctx: run_ablation(ctx.params, a.variant, a.tau, ks, ctx.device, ctx.log),
              sections=["run", "attack", "sens_fgsm", "eval"],
              deps=[DATA, model_path("baseline"), *[model_path(fgsm_source(k)) for k in ks]])
