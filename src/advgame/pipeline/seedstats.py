"""The statistics of names.SEEDS (advgame.pipeline.seeds): one seed's cells from its results
files, and the summary over seeds of each cell (docs/results.md)."""
from __future__ import annotations

import statistics


def cells(ev: dict, eta: str | None) -> dict[str, dict[str, float]]:
    """attack -> eta -> error of one results file: clean (eta "0") and every attack at `eta`
    (None: at every eta, as for Table 5's further etas)."""
    out = {}
    for attack, by_eta in ev["results"].items():
        for k in (by_eta if eta is None else ("0", eta)):
            if isinstance(by_eta.get(k), dict) and by_eta[k].get("error") is not None:
                out.setdefault(attack, {})[k] = by_eta[k]["error"]
    return out


def read_cells(files: dict[str, tuple[str, str]], stages: list[str], eta: str, read) -> dict:
    """name -> attack -> eta -> error from the results of `stages` (read: path -> object); a
    defender's Table 5 cells (every eta) join its evaluation's (the main eta)."""
    out: dict = {}
    for s in stages:
        name, f = files[s]
        for attack, by_eta in cells(read(f), None if s.startswith("table5-") else eta).items():
            out.setdefault(name, {}).setdefault(attack, {}).update(by_eta)
    return out


def summarise(per_seed: list[dict], seeds: list[int]) -> dict:
    """docs/results.md's shape: defender -> attack -> eta -> {mean, sd, min, max, per_seed, seeds}
    over the seeds that measured the cell (a seed experiment may cover some defenders only:
    `--scope paper`); a cell the main run (the first) has alone is left out (nothing to compare)."""
    out: dict = {}
    for d in per_seed[0]:
        for attack, by_eta in per_seed[0][d].items():
            for eta in by_eta:
                got = [(s, v) for s, run in zip(seeds, per_seed)
                       if (v := run.get(d, {}).get(attack, {}).get(eta)) is not None]
                if len(got) < 2 and len(seeds) > 1:
                    continue
                vals = [v for _, v in got]
                out.setdefault(d, {}).setdefault(attack, {})[eta] = {
                    "mean": round(statistics.fmean(vals), 4),
                    "sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                    "min": min(vals), "max": max(vals), "per_seed": vals, "seeds": [s for s, _ in got]}
    return {"seeds": seeds, "defenders": out}
