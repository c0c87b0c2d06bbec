"""The one plotting helper of the project: a headless pyplot and an atomic PNG save, so that every
figure (report, cat-and-mouse) is written the same way and an interrupted stage leaves no
half-written image."""
from __future__ import annotations

from pathlib import Path

from advgame.artifacts import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (stages run without a display); imported lazily
    because matplotlib costs a second at import."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 110) -> None:
    """Write `fig` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
