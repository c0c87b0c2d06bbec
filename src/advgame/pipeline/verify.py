"""`advgame verify`: does a rerun of the study agree with the committed results?

A rerun on another host (another instruction set, other kernels) differs like another training
seed would, so a byte diff of reports/ says nothing. This judges each headline number instead:
per defender at the main eta, reports/metrics.json's clean, worst-case, PGD-curr (pgd-adaptive
with a detector) and the strongest AttNet-curr (report/exports.headline), of the workspace's
reports/results.json against the committed one (`git show REV:reports/results.json`). Two runs
differ by about two seeds' worth: a cell agrees when |ours - committed| <= 1.96 * sqrt(2) * sd,
with sd the cell's spread across training seeds in the seeds file (names.SEEDS) where it has the cell,
else (no seeds measured) the test images' binomial sd sqrt(p (1 - p) / n), which is then named.

    advgame verify [--rev HEAD] [--repro [STAGE ...]]

`--repro` first runs `dvc repro --force` on the named stages (all stages without names: the
whole study, about an hour here), so a rerun and its verdict are one command. Exit status 0 when
every cell agrees, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from advgame import UserError, attack_table, config, names
from advgame.report import exports
from advgame.report.study import Study

Z = 1.959964


def headline_cells(results: dict, p: config.Params) -> dict[tuple[str, str], dict]:
    """(defender, headline key) -> {"error", "n", "attack"}: reports/metrics.json's numbers
    (report/exports.headline: a family gives its worst member, a detector defender's PGD is
    pgd-adaptive), recomputed from a results.json so that both sides carry their image count."""
    s = Study(p, results.get("defenders", {}))
    by_key = {a.headline[1]: a.name.replace(":{}", "") for a in attack_table.headline()}
    out = {}
    for d, row in exports.headline(s).items():
        worst = s.get(d, "worst-case") if d in s.defenders else None
        for key, err in row.items():
            if worst is not None:
                out[(d, key)] = {"error": err, "n": worst.get("n"), "attack": by_key.get(key, key)}
    return out


def seed_sd(seeds: dict, d: str, attack: str, eta: str) -> float | None:
    """The spread of a cell across training seeds (a family: its worst member's), None if unmeasured."""
    by = seeds.get("defenders", {}).get(d, {})
    keys = [attack] if attack in by else [k for k in by if k.startswith(attack + ":")]
    sds = [by[k].get("0" if attack == "clean" else eta, {}).get("sd") for k in keys]
    sds = [s for s in sds if s is not None]
    return max(sds) if sds and len(seeds.get("seeds", [])) > 1 else None


def compare(committed: dict, ours: dict, seeds: dict, p: config.Params) -> list[dict]:
    """One row per headline number in either file: both errors, the tolerance, its basis, agree or not."""
    a, b = headline_cells(committed, p), headline_cells(ours, p)
    eta = config.eta_key(p.attack.eta)
    rows = []
    for key in sorted(set(a) | set(b)):
        ca, cb = a.get(key), b.get(key)
        if ca is None or cb is None:
            rows.append({"defender": key[0], "attack": key[1], "committed": ca and ca["error"],
                         "ours": cb and cb["error"], "tolerance": None, "basis": "missing on one side",
                         "agree": False})
            continue
        sd, basis = seed_sd(seeds, key[0], ca["attack"], eta), "seeds"
        if sd is None:
            e, n = ca["error"], ca.get("n") or 1
            sd, basis = math.sqrt(max(e * (1 - e), 1 / n) / n), "images"
        tol = Z * math.sqrt(2) * sd
        diff = cb["error"] - ca["error"]
        rows.append({"defender": key[0], "attack": key[1], "committed": ca["error"], "ours": cb["error"],
                     "diff": round(diff, 6), "tolerance": round(tol, 6), "basis": basis,
                     "agree": abs(diff) <= tol + 1e-12})
    return rows


def _git_show(rev: str, path: str) -> dict:
    r = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"git show {rev}:{path}: {r.stderr.strip() or 'not found'}")
    return json.loads(r.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="advgame verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="HEAD", help="the commit whose results to compare with (default %(default)s)")
    ap.add_argument("--repro", nargs="*", metavar="STAGE", help="first rerun these stages (dvc repro --force; "
                    "none named: the whole study)")
    a = ap.parse_args(argv)
    try:
        if a.repro is not None:
            cmd = ["dvc", "repro", "--force", *a.repro] if a.repro else ["dvc", "repro", "--force"]
            print("$ " + " ".join(cmd), flush=True)
            if subprocess.run(cmd).returncode != 0:
                raise UserError("dvc repro failed (its output above says why)")
        p = config.load()
        eta = config.eta_key(p.attack.eta)
        committed = _git_show(a.rev, names.RESULTS)
        ours = json.loads(Path(names.RESULTS).read_text())
        seeds_file = Path(names.SEEDS)
        seeds = json.loads(seeds_file.read_text()) if seeds_file.exists() else {}
    except UserError as e:
        print(f"error [verify]: {e}", file=sys.stderr)
        return 2
    rows = compare(committed, ours, seeds, p)
    print(f"{names.RESULTS} against {a.rev}'s, eta {eta}: agree when |diff| <= 1.96 * sqrt(2) * sd (sd across "
          "training seeds, else the images' binomial sd)")
    for r in rows:
        tol = "n/a" if r["tolerance"] is None else f"{r['tolerance']:.3f} ({r['basis']})"
        diff = f"{r['diff']:+.3f}" if "diff" in r else "n/a"
        print(f"  {r['defender']:<14} {r['attack']:<12} committed {r['committed']!s:>7} ours {r['ours']!s:>7} "
              f"diff {diff:>7} tolerance {tol:<16} {'agree' if r['agree'] else 'DIFFER'}")
    n_ok = sum(r["agree"] for r in rows)
    print(f"{n_ok} of {len(rows)} headline numbers agree")
    return 0 if n_ok == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
