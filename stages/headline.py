"""Stage headline: reports/metrics.json (the study's headline numbers, what `dvc exp show` and
`dvc metrics diff` compare), the data of the eta sweep and cat-and-mouse matrix plots (what
`dvc plots diff` overlays), and the published results: a copy, for git, of every evaluation,
ablation and cat-and-mouse file, which their stages write under names.RUNS in DVC's cache (so that
DVC's run cache restores those stages). It is apart from the report so that an experiment that
reruns only the evaluations (the seed experiments of `make seeds`) gets its own metrics, plots and
results without the sweeps and Table 5."""
import shutil
from pathlib import Path

from advgame.artifacts import atomic_path
from advgame.names import METRICS, PLOT_DATA, RUNS, published, run_path
from advgame.pipeline.stage import run_stage
from advgame.report.exports import write_headline
from advgame.report.study import load_study


def body(ctx):
    s = load_study(ctx.params, ".", "cpu")
    write_headline(s, Path("."), METRICS, PLOT_DATA)
    files = published(ctx.params)
    for f in files:
        with atomic_path(f) as tmp:
            shutil.copyfile(run_path(f), tmp)
    return {"defenders": len(s.defenders), "published": len(files)}


if __name__ == "__main__":
    run_stage("headline", body, sections=["study", "attack"], deps=[RUNS])
