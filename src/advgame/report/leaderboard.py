"""A model evaluated outside the study (`advgame evaluate`, evaluation/own_model.py) beside the
study's defenders of reports/results.json: one row per defender, at the own model's main eta,
the clean error, each attack the own model met there, and the worst case; the study's rows
sorted by worst case (most robust first), the own row in its place, marked."""
from __future__ import annotations

import math

from advgame import attack_table
from advgame.config import eta_key

MARK = "*"
CASCADE = "+"  # marks a cascade column: its error counts every attack to its left


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
    labels = [a + CASCADE if attack_table.matches(a, cascade=True) else a for a in cols]
    width = [max(len(a), *(len(c[i]) for c in cells)) for i, a in enumerate(labels)]
    w0 = max(len("defender"), *(len(nm) for nm in names))
    n_study = sorted({c["n"] for _, r in rows if r is not own and (c := _cell(r, "clean", key))})
    lines = [f"error at eta {key} (clean and worst-case with 95% Wilson intervals); yours on "
             f"{own['settings']['n_test']} images, the study's on {', '.join(map(str, n_study)) or '-'}:",
             "  " + "defender".ljust(w0) + "".join(f"  {a:>{w}}" for a, w in zip(labels, width))]
    for (name, r), c in zip(rows, cells):
        lead = MARK + " " if r is own else "  "
        lines.append(lead + name.ljust(w0) + "".join(f"  {t:>{w}}" for t, w in zip(c, width)))
    if labels != cols:
        lines.append(f"{CASCADE}: the AutoAttack cascade; each attacked only the images the attacks to its left had "
                     "not fooled, so its error counts theirs too")
    return lines


# what the literature reports for a defense of the study (docs/protocol.md, "Training"), quoted
LITERATURE = {
    "pgd-at": "Madry et al. 2018: 88.5 % robust accuracy (error 0.115) under AutoAttack at eta 0.3 "
              "(RobustBench; full MNIST, 60,000 training images)",
    "trades": "Zhang et al. 2019: at least as robust as PGD-AT on MNIST",
    "fgsm-rs": "Wong et al. 2020: needs early stopping on a PGD validation error (catastrophic overfitting)",
    "magnet": "Carlini & Wagner 2017: broken by adaptive attacks that see the detector",
}


def _breaker(res: dict, key: str) -> tuple[str, float] | None:
    """The single attack with the highest error at eta `key`, among those run on every evaluated
    image on their own (no derived cells, no subset checks, no cascade cells: those count every
    attack before them); ties go to the earlier column."""
    best = None
    for name, cells in res.items():
        hit = attack_table.find(name)
        c = cells.get(key) if isinstance(cells, dict) else None
        if hit is None or hit[0].threat == "derived" or hit[0].subset or hit[0].cascade or not isinstance(c, dict) \
                or c.get("error") is None:
            continue
        if best is None or (c["error"], -hit[0].rank) > (best[1], -best[2]):
            best = (name, c["error"], hit[0].rank)
    return None if best is None else best[:2]


def study_leaderboard(defenders: dict, key: str, fmt) -> tuple[list[str], list[list[str]]]:
    """The report's leaderboard (RobustBench style): the study's defenders sorted by worst-case
    error at eta `key` (most robust first), with the clean error, the attack that broke each
    most, and the literature's figure where there is one. Returns (header, rows) for md_table;
    `fmt` formats a cell."""
    order = sorted(defenders, key=lambda d: (_worst(defenders[d], key), d))
    body = []
    for i, d in enumerate(order, 1):
        res = defenders[d].get("results", {})
        worst = res.get("worst-case", {}).get(key)
        brk = _breaker(res, key)
        body.append([str(i), f"`{d}`", fmt(res.get("clean", {}).get("0")), fmt(worst),
                     f"{1 - worst['error']:.3f}" if worst else "n/a",
                     f"`{brk[0]}` ({brk[1]:.3f})" if brk else "n/a", LITERATURE.get(d, "")])
    header = ["#", "defender", "clean error", "worst-case error", "robust accuracy",
              "strongest single attack (outside the cascade)", "literature"]
    return header, body
