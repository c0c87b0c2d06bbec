"""The attack table: one entry per attack of the evaluation, the list everything else reads (like
defense_table.py for defenses, and AutoAttack's presets of attack names). The cross-evaluation
runs the entries in this order (evaluation/crosseval.py), config validates `eval.strong_attacks`
and `art.attacks` from it, the sanity checks take their white-box, black-box and transfer sets
from it, and the report its column order, its Table 5 columns and the headline metrics.

Adding an attack: its module under advgame/attacks/ with a `run_*(call) -> x_adv` function (the
`Call` of attacks/target.py: defender, images, eta, plan, seed, member), one entry here (and its
params, if it has any). The table stays torch-free (config imports it in the `check-params`
stage): an entry names its function as "module:function" under advgame.attacks, imported when
the attack runs; a test may give a callable instead.

A name with `{}` is a family, one result per member: `fgsm-{}` per cat-and-mouse round k whose
FGSM-k is a column, `attnet-curr:{}` per attacker architecture, `art:{}` per ART attack.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Callable

THREATS = ("white-box", "grey-box", "black-box", "transfer", "learned", "derived")


@dataclass(frozen=True)
class Attack:
    name: str          # its key in results; `{}` = one per member (a family)
    run: str | Callable | None  # "module:function" under advgame.attacks, a callable, or None (not run here)
    paper: str         # who proposed it
    threat: str        # one of THREATS: what the attacker sees ("derived": computed from other cells)
    etas: str = "sweep"   # sweep: every eval.etas | strong: eval.strong_etas | art: art.etas
    rank: float = 10   # its column's place in the report's tables (clean 0 ... worst-case 9)
    seeded: bool = True    # random: one run per eval seed; False: deterministic, run once
    carry: bool = False    # iterative: at a larger eta it attacks only what smaller etas left unfooled
    needs: str = ""    # "" always | rejects: a detector that rejects (grey-box) | detector: a
    #                    differentiable detector | transfer: a transfer source (not on the baseline)
    #                    | strong: picked in eval.strong_attacks | art: picked in art.attacks
    members: str = ""  # a family's members: the plan attribute that lists them
    member_re: str = r"[^:]+"  # what a member looks like in a result name
    choices: tuple[str, ...] = ()  # the allowed members, where params pick them (art.attacks)
    subset: bool = False   # runs on the first art.n_test images only
    table: str = "main"    # the report table that shows it: main | rounds (FGSM-k) | transfer
    paper_column: str | None = None  # the column of the paper's Table 5 it fills
    headline: tuple[int, str] | None = None  # (place, key) in reports/metrics.json and the registry
    seed_column: int | None = None  # its place in the report's table across training seeds
    cascade: bool = False  # in the cascade (AutoAttack's way): at its etas it runs after every
    #                        attack not in the cascade and the cascade's entries before it, only on
    #                        the images none of them fooled; its cell is the error after it

    @property
    def family(self) -> bool:
        return "{}" in self.name

    def runner(self) -> Callable:
        if callable(self.run):
            return self.run
        module, _, fn = self.run.partition(":")
        return getattr(importlib.import_module(f"advgame.attacks.{module}"), fn)


ATTACKS: tuple[Attack, ...] = (
    Attack("clean", None, "no attack", "derived", rank=0, headline=(0, "clean"), seed_column=0),
    Attack("fgsm-{}", "fgsm:run_source", "Hamm & Mehra 2017 (FGSM-k of the cat-and-mouse rounds)", "transfer",
           rank=1, seeded=False, members="fgsm_sources", member_re=r"\d+", table="rounds"),
    Attack("fgsm-curr", "fgsm:run_curr", "Goodfellow et al. 2015", "white-box", rank=2, seeded=False,
           paper_column="FGSM-curr", seed_column=1),
    Attack("pgd-curr", "pgd:run_curr", "Madry et al. 2018", "white-box", rank=3, carry=True,
           headline=(2, "pgd_curr"), seed_column=2),
    Attack("fgsm-curr:grey-box", "fgsm:run_grey", "Goodfellow et al. 2015, on the bare classifier", "grey-box",
           rank=2, seeded=False, needs="rejects"),
    Attack("pgd-curr:grey-box", "pgd:run_grey", "Madry et al. 2018, on the bare classifier", "grey-box",
           rank=3, carry=True, needs="rejects"),
    Attack("pgd-adaptive", "adaptive:run_pgd_adaptive", "Carlini & Wagner 2017; Tramer et al. 2020",
           "white-box", rank=3.5, carry=True, needs="detector", seed_column=6),
    Attack("attnet-curr:{}", "attnet:run_curr", "Hamm & Mehra 2017 (a fresh attacker network)", "learned",
           rank=4, seeded=False, members="own_attackers", paper_column="AttNet-curr", headline=(3, "attnet_curr"),
           seed_column=3),
    Attack("apgd-ce", "apgd:run_ce", "Croce & Hein 2020", "white-box", "strong", rank=5, carry=True,
           needs="strong", seed_column=4, cascade=True),
    Attack("apgd-dlr", "apgd:run_dlr", "Croce & Hein 2020", "white-box", "strong", rank=6, carry=True,
           needs="strong", cascade=True),
    Attack("apgd-t", "apgd:run_t", "Croce & Hein 2020 (targeted, DLR)", "white-box", "strong", rank=6.2,
           carry=True, needs="strong", cascade=True),
    Attack("fab-t", "fab:run_fab_t", "Croce & Hein 2020 (targeted FAB)", "white-box", "strong", rank=6.4,
           carry=True, needs="strong", cascade=True),
    Attack("square", "square:run", "Andriushchenko et al. 2020", "black-box", "strong", rank=7, carry=True,
           needs="strong", seed_column=5, cascade=True),
    Attack("pgd-transfer:baseline", "pgd:run_transfer", "Madry et al. 2018, crafted on the baseline",
           "transfer", "strong", rank=7.5, needs="transfer"),
    Attack("art:{}", "art:run", "the adversarial-robustness-toolbox's APGD and Square (independent check)",
           "white-box", "art", rank=10, members="art_attacks", needs="art", subset=True,
           choices=("apgd-ce", "apgd-dlr", "square")),
    Attack("pgd-curr:art-subset", None, "PGD-curr on the ART check's images", "derived", rank=6.5),
    Attack("attnet-transfer:{}", None, "Hamm & Mehra 2017 (an attacker trained against another defender; "
           "stages/transfer.py)", "transfer", rank=8, member_re=r".+", table="transfer"),
    Attack("worst-case", None, "per image, any attack above", "derived", rank=9, headline=(1, "worst_case"),
           seed_column=7),
)
BY_NAME = {a.name: a for a in ATTACKS}


def get(name: str) -> Attack:
    if name not in BY_NAME:
        raise KeyError(f"unknown attack '{name}'; known: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def find(result: str) -> tuple[Attack, str | None] | None:
    """The entry (and family member) of a result name: 'fgsm-3' -> (fgsm-{}, '3'); None if none."""
    if result in BY_NAME:
        return BY_NAME[result], None
    for a in ATTACKS:
        if a.family:
            head, _, tail = a.name.partition("{}")
            m = re.fullmatch(re.escape(head) + f"({a.member_re})" + re.escape(tail), result)
            if m:
                return a, m.group(1)
    return None


def names(**where) -> tuple[str, ...]:
    """Names of the entries whose fields equal `where`, in table order: names(needs="strong")."""
    return tuple(a.name for a in ATTACKS if all(getattr(a, k) == v for k, v in where.items()))


def matches(result: str, **where) -> bool:
    """Whether a result name is an attack whose fields equal `where`: matches("fgsm-3", threat="transfer")."""
    hit = find(result)
    return hit is not None and all(getattr(hit[0], k) == v for k, v in where.items())


def headline() -> list[Attack]:
    """The headline attacks in their order in reports/metrics.json."""
    return sorted((a for a in ATTACKS if a.headline), key=lambda a: a.headline[0])


def result_name(a: Attack, member: str) -> str:
    """The result key of an entry: a family's `member` filled in, a single attack's own name."""
    return a.name.format(member) if a.family else a.name


def paper_columns(arch: str) -> list[tuple[str, str, str]]:
    """(claim key, result name, the paper's label) of each column of the paper's Table 5, in its
    order; a family (AttNet-curr) is read for the attacker architecture `arch`."""
    return [(a.name.replace(":{}", ""), result_name(a, arch), a.paper_column) for a in ATTACKS if a.paper_column]


def seed_columns(arch: str) -> list[str]:
    """The report's columns across training seeds, a family read for `arch`."""
    return [result_name(a, arch) for a in sorted((a for a in ATTACKS if a.seed_column is not None),
                                                 key=lambda a: a.seed_column)]
