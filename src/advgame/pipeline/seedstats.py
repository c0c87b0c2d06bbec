"""The statistics of names.SEEDS (advgame.pipeline.seeds): one seed's cells from its results
files, and the summary over seeds of each cell (docs/results.md)."""
from __future__ import annotations

import statistics
from pathlib import Path

from advgame import UserError, artifacts


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


def record(obj: dict, seed: int) -> dict:
    """Seed `seed`'s record in a names.SEEDS object: its `code` per stage, `cells` (defender ->
    attack -> eta -> error) and `source`; empty where the object lacks it."""
    cells: dict = {}
    for d, by_attack in obj.get("defenders", {}).items():
        for attack, by_eta in by_attack.items():
            for k, c in by_eta.items():
                if seed in c.get("seeds", []):
                    cells.setdefault(d, {}).setdefault(attack, {})[k] = c["per_seed"][c["seeds"].index(seed)]
    return {"code": obj.get("code", {}).get(str(seed), {}), "cells": cells,
            "source": obj.get("sources", {}).get(str(seed), "?").split(" [kept")[0]}


def union(a: dict, b: dict, files: dict[str, tuple[str, str]]) -> dict:
    """Two records of one seed (`record`, or a banked one): b's defenders over a's."""
    if not a["code"] or not b["code"]:
        return b if b["code"] else a
    mine = {files[st][0] for st in b["code"] if st in files}
    code = {st: c for st, c in a["code"].items() if st not in files or files[st][0] not in mine}
    return {"code": code | b["code"], "cells": {d: v for d, v in a["cells"].items() if d not in mine} | b["cells"],
            "source": f"{b['source']} + {a['source']}" if code else b["source"]}


def kept(rec: dict, files: dict[str, tuple[str, str]], now: dict[str, dict]) -> tuple[dict, dict, list[str]]:
    """What a seed's record (`record`, `union`) holds that still counts: (cells, code per stage,
    stages left out). A stage counts while the code recorded for it is the code it runs now
    (`now`: stage -> code); a defender's cells count while every stage of it that the record holds
    does (its evaluation's and its Table 5 stage's cells are one)."""
    stale = {st for st in rec["code"] if st not in files or rec["code"][st] != now.get(st)}
    bad = {files[st][0] for st in stale if st in files}
    good = {st: c for st, c in rec["code"].items() if st not in stale and files[st][0] not in bad}
    names = {files[st][0] for st in good}
    return ({d: v for d, v in rec["cells"].items() if d in names}, good, sorted(set(rec["code"]) - set(good)))


def other_seeds(old: dict, drop=(), drop_attacks=()) -> list[dict]:
    """Each seed of `old` after the main run's, as defender -> attack -> eta -> error, without the
    defenders in `drop` and the attacks in `drop_attacks`."""
    seeds = old["seeds"]
    runs: list[dict] = [{} for _ in seeds[1:]]
    for d, by_attack in old["defenders"].items():
        for attack, by_eta in by_attack.items():
            for eta, c in by_eta.items():
                for s, v in zip(c.get("seeds", seeds)[1:], c["per_seed"][1:]):
                    if d not in drop and attack not in drop_attacks:
                        runs[seeds.index(s) - 1].setdefault(d, {}).setdefault(attack, {})[eta] = v
    return runs


def moved(old: dict, now: dict, drop=(), drop_attacks=()) -> list[str]:
    """The cells whose other seeds `seeds rebase` would keep (defenders not in `drop`, attacks not
    in `drop_attacks`) where `old`'s main run (its first seed) measured other than the workspace
    (`now`: defender -> attack -> eta -> error) or the workspace lacks them: the code change moved
    them, so the other seeds' values are not this code's. 5e-4 as study.stale_seeds (half a test
    image in 1,000)."""
    main = record(old, old["seeds"][0])["cells"]
    return [f"`{d}` {a} at {e}" for d, by_attack in main.items() if d not in drop
            for a, by_eta in by_attack.items() if a not in drop_attacks for e, v in by_eta.items()
            if (w := now.get(d, {}).get(a, {}).get(e)) is None or abs(w - v) > 5e-4]


def other_host(before: dict, now: dict, bad: list[str]) -> str:
    """`seeds rebase --other-host`: the moved cells (`bad`) are taken as the host's doing, not the
    code's, only where the workspace's results.json (`now`) names other machines than the
    committed one (`before`): each seed stays a measurement of this code on some machine, as the
    seeds run elsewhere always were. Returns the line that says so."""
    was, is_ = ({(h.get("cpu"), h.get("cpu_capability")) for h in r.get("hosts", [])} for r in (before, now))
    if not (was and is_) or was == is_:
        raise UserError(f"--other-host: the main run ran where the committed one did ({sorted(is_ or was)}): "
                        f"{len(bad)} kept cells moved by the code ({', '.join(bad[:4])}); --drop(-attacks) them")
    return f"{len(bad)} kept cells moved with the main run's machine ({sorted(was)} -> {sorted(is_)}); other seeds kept"


def load_or_empty(path: str) -> dict:
    """artifacts.load_json (its message for a corrupt file), or {} where the file does not exist."""
    return artifacts.load_json(path) if Path(path).exists() else {}


def recorded(s: int, old: dict, bank: dict, files: dict) -> dict:
    """Seed `s`'s record: what names.SEEDS (`old`) holds of it, and over it what a bank holds
    (seeds.bank: its entries have a record's shape)."""
    return union(record(old, s), bank.get(str(s), record({}, s)), files)
