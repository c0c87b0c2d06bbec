"""Names of the attack-strength curves (stage strength-<defender>, issue 31): their folder, and
which defenders get one. Apart from names.py and defense_table.py because every stage depends on
those two files (and on config.py): adding these lines there would rerun the whole study.
Fold them into names.py at the next change that reruns it anyway."""
from __future__ import annotations

from advgame import defense_table as registry

STRENGTH = "reports/strength"   # one JSON per defender with a detector
DETECTOR_KINDS = ("magnet",)    # checkpoint kinds (the registry's `kind`) that reject inputs


def strength_path(defender: str) -> str:
    return f"{STRENGTH}/{defender}.json"


def with_detector(defenders: list[str]) -> list[str]:
    """The registered defenders among `defenders` whose kind has a detector, in their order."""
    return [d for d in defenders if d in registry.NAMES and registry.get(d).kind in DETECTOR_KINDS]
