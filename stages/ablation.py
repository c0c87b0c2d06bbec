"""Stage ablation-<name>: one Sens-FGSM ablation (sens-off, smooth or tau-<tau>), trained from the
baseline with sens_fgsm's schedule and measured as the evaluation does, at attack.eta on the
evaluation's images (src/advgame/ablation.py says what each variant changes).

    python stages/ablation.py --variant V [--tau T] --data DIR --base MODEL \
        [--fgsm-sources 1=models/baseline.pt,2=models/adv-fgsm-1.pt] --out MODEL --out-json FILE
"""
import argparse

from advgame.evaluation.ablation import KINDS, run_ablation
from advgame.names import ablation_name
from advgame.pipeline.stage import run_stage

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=KINDS, required=True)
    ap.add_argument("--tau", type=float, help="the tau variant's temperature")
    ap.add_argument("--data", required=True)
    ap.add_argument("--base", required=True, help="the baseline: the start, and the PGD-transfer source")
    ap.add_argument("--fgsm-sources", default="", help="k=checkpoint of each FGSM-k attack's source, comma-separated")
    ap.add_argument("--out", required=True, help="the trained variant")
    ap.add_argument("--out-json", required=True, help="its results")
    a = ap.parse_args()
    if (a.variant == "tau") != (a.tau is not None):
        ap.error("--tau goes with --variant tau, and only with it")
    if a.tau is not None and a.tau <= 0:
        ap.error("--tau must be > 0")
    try:
        sources = {int(k): path for k, _, path in (s.partition("=") for s in a.fgsm_sources.split(",") if s)}
    except ValueError:
        ap.error(f"bad --fgsm-sources '{a.fgsm_sources}'; use e.g. 1=models/baseline.pt,2=models/adv-fgsm-1.pt")
    name = ablation_name(a.variant, a.tau)
    run_stage(f"ablation-{name}",
              lambda ctx: run_ablation(ctx.params, a.variant, a.tau, a.data, a.base, sources, a.out, a.out_json,
                                       ctx.device, ctx.log),
              sections=["run", "attack", "sens_fgsm", "eval"])
