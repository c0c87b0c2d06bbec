"""Typed, validated params: every knob of the study lives in params.yaml, checked here.

An unknown key, a wrong type or an out-of-range value stops with one line that names the key
and what is allowed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, create_model, field_validator

from advgame import UserError, attack_table
from advgame import defense_table as registry
from advgame.config_errors import format_error, yaml_problem

ATTACKER_ARCHS = ("mlp", "conv", "unet")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v, info):
        # pydantic's lax mode would read YAML true/false as 1/0
        if isinstance(v, bool) and cls.model_fields[info.field_name].annotation is not bool:
            raise ValueError("must be a number, not true/false")
        return v


class RunParams(Section):
    device: str = "auto"
    seed: int = Field(0, description="the training seed: seeds the global generators and is added to "
                      "every training section's own `seed` (see derive_seeds)")
    threads: int = Field(2, ge=0, description="torch CPU threads; results can depend on it, so fixed "
                         "(0 = torch's default, which varies with the machine)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError("must be one of auto, cpu, cuda, cuda:N, mps")
        return v


class DataParams(Section):
    dataset: Literal["mnist5k", "mnist", "cifar10"] = "mnist5k"
    test_fraction: float = Field(0.2, gt=0, lt=1, description="mnist5k only")
    seed: int = 0
    root: str = "data/raw"
    download: bool = True
    train_n: int = Field(0, ge=0, description="keep a stratified first n training images; 0 = all")
    val_n: int = Field(500, ge=1, description="training images held out as the validation split "
                       "(stratified, by `seed`): every model's early stop and best epoch, never the test")

    @field_validator("root")
    @classmethod
    def _root_inside(cls, v: str) -> str:
        # a download must not write outside the project by accident ('../x'); an absolute path
        # (a shared dataset folder) is the user's explicit choice and stays allowed
        if not Path(v).is_absolute() and ".." in Path(v).parts:
            raise ValueError("a relative path must stay inside the project (no '..'); "
                             "give an absolute path to use a folder elsewhere")
        return v


class TrainParams(Section):
    """How a classifier is trained; every defense section extends it."""

    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    epochs: int = Field(5, ge=1, description="the cap: at most this many epochs")
    patience: int = Field(2, ge=1, description="stop after this many epochs without validation gain")
    min_gain: float = Field(0.0, ge=0, lt=1, description="a new best gains only if this fraction below "
                            "the last gain's value (0: any new best; >0 for a criterion that never plateaus)")
    batch: int = Field(128, ge=1)
    seed: int = 0


class ClassifierParams(Section):
    arch: Literal["auto", "smallcnn", "cifarcnn", "resnet18"] = "auto"


class AttackParams(Section):
    eta: float = Field(0.3, gt=0, le=1, description="L-inf budget every defense trains for")


STRONG_ATTACKS = attack_table.names(needs="strong")  # the attack table is the one list of attacks


class EvalParams(Section):
    etas: list[float] = Field([0.1, 0.2, 0.3, 0.4], description="the sweep: FGSM, PGD and AttNet run at each")
    n_test: int = Field(0, ge=0, description="first n test images at the sweep's other etas (and of the "
                        "stages that attack a sample: rounds, ablations, transfer, Table 5); 0 = all")
    n_main: int = Field(0, ge=0, description="first n test images at the main and strong etas; 0 = all")
    batch: int = Field(500, ge=1, description="images per attack batch")
    pgd_steps: int = Field(40, ge=1, description="PGD-curr steps")
    pgd_step_ratio: float = Field(2.5, gt=0, description="step = ratio * eta / steps")
    pgd_restarts: int = Field(1, ge=1, description="PGD-curr random restarts")
    seeds: list[int] = Field([0], description="attack seeds (random starts); cells average over them")
    strong_attacks: list[Literal[STRONG_ATTACKS]] = Field(  # type: ignore[valid-type]
        ["apgd-ce", "apgd-t", "fab-t", "square"],
        description="the cascade at strong_etas (AutoAttack's order), each on the images still unfooled")
    strong_etas: list[float] = Field([], description="etas of the strong set; [] = attack.eta")
    apgd_iters: int = Field(100, ge=1, description="APGD iterations per run")
    apgd_restarts: int = Field(1, ge=1, description="APGD-CE/-DLR random restarts")
    apgd_targets: int = Field(3, ge=1, le=9, description="APGD-T: target classes tried per image")
    fab_iters: int = Field(100, ge=1, description="FAB-T iterations per target")
    fab_targets: int = Field(9, ge=1, le=9, description="FAB-T: target classes tried per image")
    square_queries: int = Field(1000, ge=1, description="Square: queries per image")
    saturation_n: int = Field(200, ge=0, description="saturation check: the cascade at twice the iterations "
                              "and restarts on the first n images at the main eta; 0 = off")
    adaptive_starts: int = Field(8, ge=0, description="pgd-adaptive: guided starts per detector weight")
    adaptive_guided_eta: float = Field(0.3, gt=0, le=1, description="pgd-adaptive: guided starts from this eta on")
    adaptive_weights: list[PositiveFloat] = Field([10.0, 3.0], min_length=1,
                                                  description="pgd-adaptive: detector weights, tried in turn")

    @field_validator("etas")
    @classmethod
    def _etas(cls, v: list[float]) -> list[float]:
        if not v or any(not (0 < e <= 1) for e in v):
            raise ValueError("must be a non-empty list of values with 0 < eta <= 1")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("must name at least one seed")
        return v

    @field_validator("strong_etas")
    @classmethod
    def _strong_etas(cls, v: list[float]) -> list[float]:
        if any(not (0 < e <= 1) for e in v):
            raise ValueError("must be values with 0 < eta <= 1 ([] = attack.eta)")
        return v


class CatMouseParams(TrainParams):
    rounds: int = Field(10, ge=0, description="K, the number of FGSM retraining rounds")
    a: float = Field(0.5, ge=0, le=1, description="weight of the FGSM-k loss")
    epochs: int = Field(1, ge=1)
    matrix_rounds: list[int] = [0, 1, 2, 5, 10]

    @field_validator("matrix_rounds")
    @classmethod
    def _mr(cls, v: list[int]) -> list[int]:
        if any(r < 0 for r in v):
            raise ValueError("rounds must be >= 0")
        return sorted(set(v))


class FgsmAtParams(TrainParams):
    a: float = Field(0.5, ge=0, le=1, description="weight of the adversarial loss")


class SensFgsmParams(FgsmAtParams):
    tau: float = Field(0.01, gt=0, description="temperature of the tanh surrogate of sign")
    surrogate: bool = True


class AttackerParams(Section):
    """AttNet-curr: a fresh attacker per arch trained against the frozen defender (attacker.py)."""
    archs: list[Literal["mlp", "conv", "unet"]] = list(ATTACKER_ARCHS)
    hidden: int = Field(300, ge=1, description="mlp hidden units")
    width: int = Field(32, ge=1, description="channels of conv and unet attackers")
    param: Literal["box", "tanh"] = Field("box", description="z = lo + (hi-lo) sigmoid(h) within the "
                                          "eta-box (no clip dead zone) or the paper's clip(x + eta tanh(h))")
    loss: Literal["margin", "ce"] = Field("margin", description="attack loss: CW margin capped at kappa "
                                          "(plus a defender's extra term, e.g. MagNet's) or the defender's own")
    kappa: float = Field(20.0, gt=0, description="margin cap: fooled examples stop pulling the attacker")
    penalty: float = Field(0.1, ge=0, description="weight of relu(|h| - h_bound)^2: keeps h off saturation")
    h_bound: float = Field(3.0, gt=0, description="|h| allowed before the penalty starts")
    init_scale: float = Field(0.01, ge=0, description="last layer's initial weights scaled by this: "
                              "training starts near h = 0, away from saturation")
    warmup_epochs: int = Field(2, ge=0, description="epochs regressing z onto FGSM examples before the "
                               "attack loss: an image-dependent start (0: none)")
    warmup_size: float = Field(1.0, gt=0, le=1, description="warm-start target step, as a fraction of eta")
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = Field(3e-3, gt=0, description="peak lr; cosine decay to 0 over `epochs`")
    epochs: int = Field(3, ge=1, description="at most this many epochs")
    patience: int = Field(1, ge=1, description="stop after this many epochs without held-out gain")
    tol: float = Field(0.005, ge=0, description="held-out success gain that counts as progress")
    batch: int = Field(32, ge=1, description="small: the attacker needs steps more than clean gradients")
    seed: int = 0


class GameParams(TrainParams):
    attacker_arch: Literal["mlp", "conv", "unet"] = "mlp"
    k: int = Field(1, ge=1, description="attacker ascent steps per defender descent step")
    lr_attacker: float = Field(1e-3, gt=0)
    gamma: float = Field(1.0, ge=0, description="minimax: weight of gamma/2 ||grad_v f||^2")
    gamma_maximin: float = Field(0.01, ge=0, description="maximin: weight of gamma/2 ||grad_u f||^2 "
                                 "(||grad_u f||^2 is ~1e8 times ||grad_v f||^2, so one gamma cannot serve both)")
    gamma_sweep: list[float] = Field([], description="minimax gammas of the sweep figure, one stage "
                                     "each (the study's own gamma is the minimax stage itself)")
    clean_weight: float = Field(0.5, ge=0, le=1)
    max_loss: float = Field(1e4, gt=0, description="a loss above this stops training")

    @field_validator("gamma_sweep")
    @classmethod
    def _sweep(cls, v: list[float]) -> list[float]:
        if any(g < 0 for g in v):
            raise ValueError("every gamma must be >= 0")
        return sorted(set(v))


class PgdAtParams(TrainParams):
    steps: int = Field(10, ge=1)
    step_ratio: float = Field(2.5, gt=0)


class TradesParams(PgdAtParams):
    beta: float = Field(6.0, ge=0)


class FgsmRsParams(TrainParams):
    alpha_ratio: float = Field(1.25, gt=0, description="FGSM step = alpha_ratio * eta")


class MagnetParams(TrainParams):
    fpr: float = Field(0.01, gt=0, lt=1, description="detector false-positive rate on clean data")
    noise: float = Field(0.1, ge=0, description="std of the noise the autoencoder learns to remove")
    detector_weight: float = Field(10.0, ge=0, description="white-box attack: penalty weight")


class ArtParams(Section):
    """ART (a library we did not write) as an optional independent check, cells `art:<name>`;
    the tests and bench/bench_attacks.py compare our APGD with it."""

    attacks: list[Literal[attack_table.get("art:{}").choices]] = Field(  # type: ignore[valid-type]
        [], description="ART attacks to run in the evaluation as a check; [] = none")
    etas: list[float] = Field([0.3], description="etas of the ART check")
    n_test: int = Field(0, ge=0, description="first n evaluated images for ART; 0 = all")
    apgd_iters: int = Field(100, ge=1, description="ART APGD iterations")
    square_queries: int = Field(1000, ge=1, description="ART Square queries")

    _etas = field_validator("etas")(EvalParams._etas.__func__)


class Table5Params(Section):
    """The paper's Table 5 beyond the main eta: FGSM-curr and a fresh AttNet-curr, retrained at
    each eta (the paper's protocol), against a few defenders."""

    defenders: list[Literal["sens-fgsm", "alt", "minimax", "maximin", "fgsm-at", "baseline"]] = \
        ["minimax", "alt", "sens-fgsm"]
    etas: list[float] = [0.4, 0.5, 0.6]
    arch: Literal["mlp", "conv", "unet"] = "mlp"

    @field_validator("etas")
    @classmethod
    def _t5_etas(cls, v: list[float]) -> list[float]:
        if any(not (0 < e <= 1) for e in v):
            raise ValueError("every eta must satisfy 0 < eta <= 1 (an empty list turns Table 5's extra etas off)")
        return v


ABLATION_VARIANTS = ("sens-off", "smooth")


class AblationParams(Section):
    """Sens-FGSM's ablations (issue 16), each trained with sens_fgsm's schedule and data:
    `sens-off` (the sensitivity term off: fgsm-at's objective, the control), `smooth` (the tanh
    step in the forward pass too) and Sens-FGSM at each tau of `taus` (sens_fgsm.tau itself is
    the sens-fgsm defender, so it is no extra stage). [] and [] = no ablation stages."""

    variants: list[Literal[ABLATION_VARIANTS]] = Field(  # type: ignore[valid-type]
        [], description="variants of Sens-FGSM trained and measured by their own stage")
    taus: list[float] = Field([], description="extra surrogate temperatures of the tau sweep")

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("taus")
    @classmethod
    def _taus(cls, v: list[float]) -> list[float]:
        if any(t <= 0 for t in v):
            raise ValueError("every tau must be > 0 (an empty list turns the tau sweep off)")
        return sorted(set(v))


class ReportParams(Section):
    examples: int = Field(8, ge=1, description="images per attack in the example grid")


DEFENDERS = registry.NAMES  # the defense registry is the one list of defenders


class StudyParams(Section):
    """Which defenders the pipeline builds ("catmouse" = the rounds; its last one is evaluated).
    Changing this list changes dvc.yaml: run `make pipeline` afterwards."""

    defenders: list[Literal[DEFENDERS]] = list(DEFENDERS)  # type: ignore[valid-type]
    @field_validator("defenders")
    @classmethod
    def _needs_baseline(cls, v: list[str]) -> list[str]:
        if "baseline" not in v:
            raise ValueError("must include baseline (every other defense starts from it or is compared to it)")
        return list(dict.fromkeys(v))


class Params(Section):
    study: StudyParams = StudyParams()
    run: RunParams = RunParams()
    data: DataParams = DataParams()
    classifier: ClassifierParams = ClassifierParams()
    attack: AttackParams = AttackParams()
    baseline: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    catmouse: CatMouseParams = CatMouseParams()
    fgsm_at: FgsmAtParams = FgsmAtParams()
    sens_fgsm: SensFgsmParams = SensFgsmParams()
    attacker: AttackerParams = AttackerParams()
    game: GameParams = GameParams()
    pgd_at: PgdAtParams = PgdAtParams()
    trades: TradesParams = TradesParams()
    fgsm_rs: FgsmRsParams = FgsmRsParams()
    magnet: MagnetParams = MagnetParams()
    art: ArtParams = ArtParams()
    table5: Table5Params = Table5Params()
    ablation: AblationParams = AblationParams()
    report: ReportParams = ReportParams()


# a defense registered with a section of its own gets it here, validated by its kind's class
_NEW_SECTIONS = {d.section: (globals()[d.params_model], globals()[d.params_model]())
                 for d in registry.DEFENSES if d.section and d.section not in Params.model_fields}
if _NEW_SECTIONS:
    Params = create_model("Params", __base__=Params, **_NEW_SECTIONS)  # type: ignore[misc]


NOT_TRAINING_SEEDS = ("run", "data")  # data.seed is the train/test split: it must not move with run.seed


def training_sections(p: Params) -> list[str]:
    """Sections whose `seed` is a training seed (data order, training attacks' random starts,
    attacker training): every section with a `seed` but the data split's."""
    return [n for n in type(p).model_fields
            if n not in NOT_TRAINING_SEEDS and "seed" in type(getattr(p, n)).model_fields]


def derive_seeds(p: Params) -> Params:
    """`run.seed` changes every training seed: each training section's seed becomes its own
    `seed` (an offset, 0 by default) plus `run.seed`, so `dvc exp run -S run.seed=1` retrains
    everything under new randomness while run.seed 0 keeps every seed as written."""
    if not p.run.seed:
        return p
    return p.model_copy(update={n: getattr(p, n).model_copy(update={"seed": getattr(p, n).seed + p.run.seed})
                                for n in training_sections(p)})


def parse(raw: dict, source: str = "params.yaml") -> Params:
    """Validated params with the derived training seeds (derive_seeds): parse once, from params
    as written (a dump of the result would add run.seed again)."""
    try:
        return derive_seeds(Params.model_validate(raw or {}))
    except ValidationError as e:
        raise UserError(format_error(e, Params, source)) from None


def load(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run from the project root (where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: {yaml_problem(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e}); fix the file") from None
    if raw is not None and not isinstance(raw, dict):
        raise UserError(f"{path}: must be a mapping of sections (study:, run:, data: ...), "
                        f"not a {type(raw).__name__}")
    return parse(raw, str(path))


def classifier_arch(p: Params) -> str:
    if p.classifier.arch != "auto":
        return p.classifier.arch
    return "cifarcnn" if p.data.dataset == "cifar10" else "smallcnn"


def eta_key(eta: float) -> str:
    """The results contract's key for an eta: the decimal string of params ('0.3')."""
    return "0" if eta == 0 else repr(float(eta))
