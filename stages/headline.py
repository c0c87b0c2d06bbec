"""Stage headline: reports/metrics.json (the study's headline numbers, what `dvc exp show` and
`dvc metrics diff` compare) and the data of the eta sweep and cat-and-mouse matrix plots (what
`dvc plots diff` overlays), from the evaluations and the cat-and-mouse rounds. It is apart from
the report so that an experiment that reruns only the evaluations (the seed experiments of
`make seeds`) gets its own metrics and plots without the sweeps, ablations and Table 5."""
from pathlib import Path

from advgame.names import CATMOUSE, METRICS, PLOT_DATA
from advgame.pipeline.stage import run_stage
from advgame.report.exports import write_headline
from advgame.report.study import load_study


def body(ctx):
    s = load_study(ctx.params, ".", "cpu")
    write_headline(s, Path("."), METRICS, PLOT_DATA)
    return {"defenders": len(s.defenders)}


if __name__ == "__main__":
    run_stage("headline", body, sections=["study", "attack"], deps=["reports/eval", CATMOUSE])
