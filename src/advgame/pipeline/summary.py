"""Prints the headline numbers after `make study`, each stage's time of its last run here, and
where the results are."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from advgame import attack_table, config, names
from advgame.report.tables import md_table


def timings(root: Path = Path(".")) -> dict[str, float]:
    """Stage -> seconds of its last run in this workspace (names.TIMINGS), in dvc.yaml's order; a
    stage DVC did not rerun keeps the time of the run that made its outputs here."""
    dvc = root / "dvc.yaml"
    order = list(yaml.safe_load(dvc.read_text()).get("stages", {})) if dvc.exists() else []
    out = {}
    for s in order:
        f = root / names.timing_path(s)
        if f.exists():
            out[s] = float(json.loads(f.read_text()).get("seconds", 0.0))
    return out


def timing_table(timing: dict[str, float]) -> str:
    body = [[s, f"{t:.1f}"] for s, t in timing.items()]
    total = sum(timing.values())
    body.append(["**total**", f"**{total:.1f}** ({total / 60:.1f} min)"])
    return md_table(["stage", "seconds"], body)


def main() -> None:
    p = config.load()
    key = config.eta_key(p.attack.eta)
    metrics = json.loads(Path(names.METRICS).read_text()) if Path(names.METRICS).exists() else {}
    cols = [a.headline[1] for a in attack_table.headline()]  # clean, worst_case, pgd_curr, attnet_curr
    print(f"\nerror on {p.data.dataset} test (eta {key}; {names.METRICS}: PGD-curr is pgd-adaptive for a "
          "defender with a detector, AttNet-curr the strongest attacker network):")
    print(f"  {'defender':<14}" + "".join(f"{c:>{len(c) + 2}}" for c in cols))
    for d, row in metrics.items():
        if d in names.final_defenders(p):
            print(f"  {d:<14}" + "".join(f"{row.get(c, float('nan')):>{len(c) + 2}.3f}" for c in cols))
    results = Path(names.RESULTS)
    verdicts = json.loads(results.read_text()).get("verdicts", []) if results.exists() else []
    if verdicts:
        counts = {v: sum(e["verdict"] == v for e in verdicts)
                  for v in ("reproduced", "not reproduced", "inconclusive", "not comparable")}
        print("\ndoes the paper hold? " + ", ".join(f"{n} {v}" for v, n in counts.items())
              + " (report.md section 4)")
    timing = timings()
    if timing:
        print(f"\nseconds of each stage's last run here ({names.TIMINGS}/):\n")
        print(timing_table(timing))
    print(f"\nresults: reports/report.md, {names.RESULTS}, reports/eval/*.json")
    print("runs:    make ui  (MLflow on http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
