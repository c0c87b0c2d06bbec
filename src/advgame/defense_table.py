"""The defense registry: one entry per defense of the study, the table everything reads (like
RobustBench's model-zoo entries). The dvc.yaml generator builds each defense's stage from it,
config validates `study.defenders` and adds each defense's params section from it, the stage
scripts take their `--defense` choices from it, load_defender checks its `kind`, and the report
describes a defense with `describe(name)`.

Adding a defense of an existing kind: its objective in its module under advgame/defenses/, one
entry here, its params section in params.yaml (and configs/*.yaml). Nothing here imports the
rest of advgame (config imports this module), so an entry names its params model by class name.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Defense:
    name: str              # the defender's name in params, files and results
    family: str            # how the generator builds its stage(s): baseline | rounds | train | game
    script: str            # the stage script that trains it
    args: str              # the script's own arguments (the generator adds the paths)
    section: str | None    # its params section
    params_model: str | None  # the config class that validates that section
    paper: str             # who proposed it
    objective: str         # what it trains for, one line
    reads: tuple[str, ...] = ("attack",)  # params it reads besides run.* and its section
    upstream: tuple[str, ...] = ("baseline",)  # models it starts from
    kind: str = "classifier"  # the checkpoint's `kind`: how load_defender rebuilds it


def _field(name: str, section: str, model: str, paper: str, objective: str) -> Defense:
    return Defense(name, "train", "stages/field.py", f"--defense {name}", section, model, paper, objective)


def _game(name: str, gamma: tuple[str, ...], objective: str) -> Defense:
    return Defense(name, "game", "stages/game.py", f"--mode {name}", "game", "GameParams",
                   "Hamm & Mehra 2017", objective, reads=("attack", *gamma))


DEFENSES: tuple[Defense, ...] = (
    Defense("baseline", "baseline", "stages/baseline.py", "", "baseline", "TrainParams", "standard training",
            "u_0, cross-entropy on clean data", reads=("classifier",), upstream=()),
    Defense("catmouse", "rounds", "stages/catmouse_round.py", "", "catmouse", "CatMouseParams",
            "Hamm & Mehra 2017", "cat-and-mouse: u_k is u_(k-1) fine-tuned on clean data mixed with "
            "FGSM-k examples made once against u_(k-1); the last round is evaluated"),
    Defense("fgsm-at", "train", "stages/fgsm_training.py", "--method fgsm-at", "fgsm_at", "FgsmAtParams",
            "Goodfellow et al. 2015", "online FGSM adversarial training, the FGSM example a constant"),
    Defense("sens-fgsm", "train", "stages/fgsm_training.py", "--method sens-fgsm", "sens_fgsm",
            "SensFgsmParams", "Hamm & Mehra 2017", "FGSM adversarial training whose gradient keeps the "
            "sensitivity term through the FGSM step (straight-through tanh surrogate of sign)"),
    _game("alt", (), "the AttNet game solved by alternating descent (defender) and ascent (attacker)"),
    _game("minimax", ("game.gamma",), "the AttNet game, the defender descending f + gamma/2 "
          "||grad_v f||^2 (one-step look-ahead of the attacker's best response)"),
    _game("maximin", ("game.gamma_maximin",), "the AttNet game with the attacker leading: it ascends "
          "f - gamma/2 ||grad_u f||^2"),
    _field("pgd-at", "pgd_at", "PgdAtParams", "Madry et al. 2018",
           "cross-entropy on the PGD example (random start) of the current parameters"),
    _field("trades", "trades", "TradesParams", "Zhang et al. 2019",
           "CE(g(x), y) + beta KL(p(x) || p(x')), x' maximising the KL"),
    _field("fgsm-rs", "fgsm_rs", "FgsmRsParams", "Wong et al. 2020",
           "fast adversarial training: one FGSM step from a uniform random start"),
    Defense("magnet", "train", "stages/magnet.py", "", "magnet", "MagnetParams", "Meng & Chen 2017",
            "a denoising autoencoder (reformer) and a reconstruction-error detector in front of the "
            "frozen baseline", kind="magnet"),
)
BY_NAME = {d.name: d for d in DEFENSES}
NAMES = tuple(BY_NAME)


def get(name: str) -> Defense:
    if name not in BY_NAME:
        raise KeyError(f"unknown defense '{name}'; known: {', '.join(NAMES)}")
    return BY_NAME[name]


def names_for(script: str) -> tuple[str, ...]:
    """The defenses one stage script trains (its `--defense`/`--method`/`--mode` choices)."""
    return tuple(d.name for d in DEFENSES if d.script == script)


def describe(name: str) -> str:
    """The report's one line for a defender: paper and objective."""
    d = get("catmouse" if name.startswith("adv-fgsm-") else name)
    return f"{name} ({d.paper}): {d.objective}."
