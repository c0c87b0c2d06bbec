"""What the study writes for machines rather than people: the headline metrics file that DVC
shows (`dvc exp show`, `dvc metrics diff`) and the data files behind its plots (`dvc plots diff`
overlays two experiments). The headline stage writes the metrics, the eta sweep and the
cat-and-mouse matrix; the report stage the gamma sweep. Every number is read from the study."""
from __future__ import annotations

import math
from pathlib import Path

from advgame import attack_table
from advgame.artifacts import save_json, write_csv
from advgame.report.game import SWEEP_ATTACKS


def _err(c: dict | None) -> float | None:
    return None if c is None else round(float(c["error"]), 4)


def headline(s) -> dict:
    """Per defender at the training eta, the attack table's headline attacks (clean, worst-case,
    PGD-curr, the strongest learned attacker: a family gives its worst member); the cat-and-mouse
    means. Small on purpose: it is what people compare. A defender with a detector reports its
    full white-box PGD as PGD-curr: pgd-adaptive (its `sanity_attack`), which attacks the
    detector as hard as the classifier."""
    out: dict = {}
    for d, o in s.defenders.items():
        res = o.get("results", {})
        row = {}
        for a in attack_table.headline():
            if a.family:
                cells = [c for n, r in res.items() if (hit := attack_table.find(n)) and hit[0] is a
                         and (c := r.get(s.eta))]
                row[a.headline[1]] = _err(max(cells, key=lambda c: c["error"])) if cells else None
            else:
                name = o.get("sanity_attack", a.name) if a.name == "pgd-curr" else a.name
                row[a.headline[1]] = _err(s.get(d, name) or s.get(d, a.name))
        out[d] = {k: v for k, v in row.items() if v is not None}
    if s.catmouse:
        for col in ("own_attack", "next_attack"):
            vals = [r[col] for r in s.catmouse if r.get(col) is not None]
            if vals:
                out.setdefault("catmouse", {})[f"{col}_mean"] = round(sum(vals) / len(vals), 4)
    return out


def eta_rows(s) -> list[dict]:
    """eta, then one column per defender: its PGD-curr error (computed at every eta)."""
    etas = sorted({float(k) for o in s.defenders.values() for k in o.get("results", {}).get("pgd-curr", {})})
    return [{"eta": e, **{d: _err(o["results"]["pgd-curr"].get(next(
        (k for k in o["results"]["pgd-curr"] if math.isclose(float(k), e)), ""))) for d, o in s.defenders.items()
        if "pgd-curr" in o.get("results", {})}} for e in etas]


def matrix_rows(mx: dict | None) -> list[dict]:
    """j (the FGSM-j attack), then one column per round u_i."""
    if not mx:
        return []
    return [{"j": int(a.split("-")[1]), **{f"u_{r}": vals[j] for r, vals in zip(mx["rounds"], mx["error"])}}
            for j, a in enumerate(mx["attacks"])]


def gamma_rows(pts: list[dict], arch: str) -> list[dict]:
    attacks = (*SWEEP_ATTACKS, f"attnet-curr:{arch}")
    return [{"gamma": q["gamma"], **{a: _err(q.get(a)) for a in attacks}} for q in pts]


def write_headline(s, root: Path, metrics: str, plot_files: dict[str, str]) -> list[Path]:
    """The headline stage's files: the metrics file and the eta sweep and cat-and-mouse matrix
    plot data (read from the evaluations and the rounds only, so a seed experiment that reruns
    the evaluations has its own)."""
    save_json(headline(s), root / metrics)
    rows = {"eta_sweep": eta_rows(s), "matrix": matrix_rows(s.matrix)}
    written = [root / metrics]
    for name in rows:
        write_csv(rows[name], root / plot_files[name])  # an empty file (header only) when the study has none
        written.append(root / plot_files[name])
    return written


def write_gamma(s, root: Path, path: str) -> Path:
    """The report's plot data: minimax's gamma sweep (it needs the sweep stages)."""
    write_csv(gamma_rows(s.sweep, s.params.game.attacker_arch), root / path)
    return root / path
