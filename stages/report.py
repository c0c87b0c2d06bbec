"""Stage report: reports/results.json, reports/report.md and reports/figures/*.png from the
evaluation results; logs them on the pipeline's parent MLflow run."""
from advgame.report import build_report
from advgame.stage import run_stage


def body(ctx):
    out = build_report(ctx.params, ".", ctx.device)
    for path in [out["results"], out["report"], *out["figures"]]:
        ctx.tracker.log_artifact(path, "report", parent=True)
    return {}


if __name__ == "__main__":
    run_stage("report", body, sections=["study", "data", "attack", "eval", "art", "catmouse", "report"],
              deps=["reports/eval", "reports/catmouse", "data/prepared/meta.json", "models/baseline.pt",
                    "models/attackers/baseline"])
