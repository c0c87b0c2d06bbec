"""The study's names and paths, in one place: the dvc.yaml generator, the stages and the report
all read them from here (and nothing here imports the rest of the library but config)."""
from __future__ import annotations

from advgame import config
from advgame import defense_table as registry

DATA = "data/prepared"
# check-params' output: its bytes never change, so a valid params change reruns only the check
STAMP = "data/params-valid.json"
STAMP_TEXT = '{"valid": true}\n'
TRANSFER = "reports/transfer.json"
CATMOUSE = "reports/catmouse"     # the cat-and-mouse curve and matrix
CATMOUSE_FILES = ("matrix.png", "curve.png", "matrix.json", "curve.csv")
METRICS = "reports/metrics.json"   # the study's headline numbers: `dvc exp show`, `dvc metrics diff`
STAGE_REPORTS = "reports/stages"   # one JSON per stage: device, host, final numbers (stage_report)
TIMINGS = "reports/timing"         # one JSON per stage: its seconds (timing_path); not tracked by git or DVC
RESULTS = "reports/results.json"   # the report's numbers (report/render.py)
SEEDS = "reports/seeds.json"       # the training-seed results, written by `make seeds` (pipeline.seeds)
# what the evaluation, ablation and cat-and-mouse stages write, in DVC's cache (so that DVC's run
# cache restores those stages); the headline stage publishes each file at the path it has without
# "runs/" (eval_path, ablation_path, CATMOUSE), which git holds
RUNS = "reports/runs"
PLOT_DATA = {  # data files the report writes for `dvc plots show/diff`
    "eta_sweep": "reports/plots/eta_sweep.csv",
    "matrix": "reports/plots/catmouse_matrix.csv",
    "gamma_sweep": "reports/plots/gamma_sweep.csv",
    "training": "reports/plots/training",   # every model's validation curve: <model>.csv (epoch, val)
}
# the stage scripts that train a model and report its training record (`training` of its stage report)
TRAINING_SCRIPTS = ("stages/baseline.py", "stages/catmouse_round.py", "stages/fgsm_training.py",
                    "stages/game.py", "stages/field.py", "stages/magnet.py")


def model_path(defender: str) -> str:
    return f"models/{defender}.pt"


def attackers_dir(defender: str) -> str:
    return f"models/attackers/{defender}"


def stage_report(name: str) -> str:
    """The stage report of stage `name` (written by pipeline.stage.run_stage)."""
    return f"{STAGE_REPORTS}/{name}.json"


def timing_path(name: str) -> str:
    """The wall-clock seconds of stage `name`'s last run (pipeline.stage.run_stage)."""
    return f"{TIMINGS}/{name}.json"


def eval_path(defender: str) -> str:
    """The published evaluation (git): a copy of run_path(eval_path(defender))."""
    return f"reports/eval/{defender}.json"


def run_path(published: str) -> str:
    """Where the stage that makes `published` (a path under reports/) writes it: under RUNS."""
    return f"{RUNS}/{published.removeprefix('reports/')}"


def fgsm_test_path(k: int) -> str:
    """FGSM-k of the test split, made by round k against u_(k-1)."""
    return f"data/fgsm/fgsm-{k}-test.pt"


def game_attacker_path(mode: str) -> str:
    return f"models/{mode}-attacker.pt"


def game_curve_path(mode: str) -> str:
    return f"reports/game/{mode}.csv"


def sweep_model_path(name: str) -> str:
    return f"models/sweep/{name}.pt"


def sweep_path(name: str) -> str:
    return f"reports/sweep/{name}.json"


def table5_path(defender: str) -> str:
    return f"reports/table5/{defender}.json"


def round_model(k: int) -> str:
    """u_k of the cat-and-mouse game: u_0 is the baseline."""
    return "baseline" if k == 0 else f"adv-fgsm-{k}"


def fgsm_source(k: int) -> str:
    """FGSM-k is computed against u_(k-1)."""
    return round_model(k - 1)


def final_defenders(p: config.Params) -> list[str]:
    """The defenders evaluated by the cross-evaluation, in report order."""
    out = []
    for d in p.study.defenders:
        if d == "catmouse":
            if p.catmouse.rounds > 0:
                out.append(round_model(p.catmouse.rounds))
        else:
            out.append(d)
    return out


def fgsm_rounds(p: config.Params) -> list[int]:
    """Rounds k whose FGSM-k attack is a column of the evaluation (FGSM-k comes from u_(k-1))."""
    if "catmouse" not in p.study.defenders:
        return []
    return [k for k in p.catmouse.matrix_rounds if 1 <= k <= p.catmouse.rounds]


def sweep_name(gamma: float) -> str:
    """Stage / file name of one point of the minimax gamma sweep (no dots: DVC stage names)."""
    return "sweep-minimax-g" + f"{gamma:g}".replace(".", "p").replace("+", "")


def registered_model(defender: str) -> str:
    """The MLflow registered model of a final defender (alias `study` = this study's version)."""
    return f"advgame-{defender}"


def ablation_name(kind: str, tau: float | None = None) -> str:
    """Name of one Sens-FGSM ablation (stage `ablation-<name>`): sens-off, smooth, tau-0p001."""
    return f"tau-{tau:g}".replace(".", "p").replace("+", "") if kind == "tau" else kind


def ablation_variants(p: config.Params) -> list[tuple[str, float | None]]:
    """(kind, tau) of every ablation stage, none without sens-fgsm. sens_fgsm.tau itself is no
    tau stage: that point of the sweep is the sens-fgsm defender."""
    if "sens-fgsm" not in p.study.defenders:
        return []
    return [(v, None) for v in p.ablation.variants] + [
        ("tau", t) for t in p.ablation.taus if t != p.sens_fgsm.tau]


def ablation_path(name: str) -> str:
    return f"reports/ablation/{name}.json"


def ablation_model_path(name: str) -> str:
    return f"models/ablation/{name}.pt"


def published(p: config.Params) -> list[str]:
    """The results the headline stage publishes for git, each a copy of its run_path file: the
    evaluations, the ablations and the cat-and-mouse files."""
    catmouse = "catmouse" in p.study.defenders and p.catmouse.rounds > 0
    return [*map(eval_path, final_defenders(p)),
            *(ablation_path(ablation_name(k, t)) for k, t in ablation_variants(p)),
            *(f"{CATMOUSE}/{f}" for f in CATMOUSE_FILES if catmouse)]


STRENGTH = "reports/strength"   # the attack-strength curves (stage strength-<defender>): one JSON each
DETECTOR_KINDS = ("magnet",)    # checkpoint kinds (the registry's `kind`) that reject inputs


def strength_path(defender: str) -> str:
    return f"{STRENGTH}/{defender}.json"


def with_detector(defenders: list[str]) -> list[str]:
    """The registered defenders among `defenders` whose kind has a detector (each gets a strength
    curve), in their order."""
    return [d for d in defenders if d in registry.NAMES and registry.get(d).kind in DETECTOR_KINDS]
