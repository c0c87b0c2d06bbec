"""Stage report: reports/results.json, reports/report.md, the plot data and reports/figures/*.png
from the evaluation results, read from the publish stage's copies (report/publish.py: files git
holds, so a clone without DVC's cache reruns this stage); logs them, the headline metrics and each
game defender's exploitability, on the pipeline's parent MLflow run."""
from advgame.artifacts import load_json
from advgame.names import METRICS, SEEDS
from advgame.pipeline.stage import run_stage
from advgame.pipeline.tracking import git_commit
from advgame.report.publish import INPUTS
from advgame.report.render import build_report


def body(ctx):
    out = build_report(ctx.params, ".", ctx.device, commit=git_commit(code_only=True), inputs=INPUTS)
    for path in [out["results"], out["report"], *out["figures"]]:
        ctx.tracker.log_artifact(path, "report", parent=True)
    ctx.tracker.log_parent_metrics({f"{d}.{k}": v for d, row in load_json(METRICS).items()
                                    for k, v in row.items()})
    game = load_json(out["results"]).get("game", {})  # each game defender's exploitability per architecture
    ctx.tracker.log_parent_metrics({f"game.{d}.exploitability.{a}": v for d, e in game.items()
                                    for a, v in e["exploitability"].items()})
    ctx.tracker.register_defenders(ctx.params)  # one registered model per defender, alias `study`
    return {}


if __name__ == "__main__":
    run_stage("report", body, sections=["study", "data", "attack", "eval", "art", "catmouse", "report"],
              deps=[INPUTS, SEEDS, METRICS])
