"""A model evaluated outside the study (`advgame evaluate`, evaluation/own_model.py) beside the
study's defenders of reports/results.json: one row per defender, at the own model's main eta,
the clean error, each attack the own model met there, and the worst case; the study's rows
sorted by worst case (most robust first), the own row in its place, marked."""
from __future__ import annotations

import math

from advgame import attack_table
from advgame.config import eta_key

MARK = "*"


def _rank(name: str) -> float:
    hit = attack_table.find(name)
    return hit[0].rank if hit else 100.0


def columns(own: dict, key: str) -> list[str]:
    """clean, the attacks the own model met at eta `key` in the report's column order, worst-case."""
    met = [a for a, cells in own["results"].items() if key in cells and a not in ("clean", "worst-case")]
    return ["clean", *sorted(met, key=_rank), "worst-case"]


def _cell(row: dict, attack: str, key: str) -> dict | None:
    return row.get("results", {}).get(attack, {}).get("0" if attack == "clean" else key)


def _text(c: dict | None, interval: bool) -> str:
    if c is None:
        return "-"
    if not interval:
        return f"{c['error']:.3f}"
    lo, hi = c["ci95"]
    return f"{c['error']:.3f} [{lo:.3f}, {hi:.3f}]"


def _worst(row: dict, key: str) -> float:
    c = _cell(row, "worst-case", key)
    return c["error"] if c is not None else math.inf


def leaderboard(own: dict, study: dict, eta: float) -> list[str]:
    """The table's lines: `own` is evaluate_model's dict, `study` reports/results.json."""
    key = eta_key(eta)
    cols = columns(own, key)
    rows = sorted(study.get("defenders", {}).items(), key=lambda kv: (_worst(kv[1], key), kv[0]))
    rows.append((f"{own['defender']} (yours)", own))
    rows.sort(key=lambda kv: _worst(kv[1], key))  # stable: the study's order, the own row at its place
    cells = [[_text(_cell(r, a, key), a in ("clean", "worst-case")) for a in cols] for _, r in rows]
    names = [name for name, _ in rows]
    width = [max(len(a), *(len(c[i]) for c in cells)) for i, a in enumerate(cols)]
    w0 = max(len("defender"), *(len(nm) for nm in names))
    n_study = sorted({c["n"] for _, r in rows if r is not own and (c := _cell(r, "clean", key))})
    lines = [f"error at eta {key} (clean and worst-case with 95% Wilson intervals); yours on "
             f"{own['settings']['n_test']} images, the study's on {', '.join(map(str, n_study)) or '-'}:",
             "  " + "defender".ljust(w0) + "".join(f"  {a:>{w}}" for a, w in zip(cols, width))]
    for (name, r), c in zip(rows, cells):
        lead = MARK + " " if r is own else "  "
        lines.append(lead + name.ljust(w0) + "".join(f"  {t:>{w}}" for t, w in zip(c, width)))
    return lines
