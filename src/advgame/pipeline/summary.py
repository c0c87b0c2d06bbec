"""Prints the headline numbers after `make study` and where the results are."""
from __future__ import annotations

import json
from pathlib import Path

from advgame import attack_table, config


def main() -> None:
    p = config.load()
    key = config.eta_key(p.attack.eta)
    cols = [a.name for a in attack_table.headline() if not a.family]  # clean, worst-case, pgd-curr
    rows = []
    for f in sorted(Path("reports/eval").glob("*.json")):
        res = json.loads(f.read_text())["results"]
        rows.append((f.stem, [res.get(a, {}).get("0" if a == "clean" else key, {}).get("error", float("nan"))
                              for a in cols]))
    print(f"\nerror on {p.data.dataset} test (eta {key}):")
    print(f"  {'defender':<14}" + "".join(f"{a:>{len(a) + 2}}" for a in cols))
    for d, v in rows:
        print(f"  {d:<14}" + "".join(f"{x:>{len(a) + 2}.3f}" for x, a in zip(v, cols)))
    verdicts = json.loads(Path("reports/results.json").read_text()).get("verdicts", []) \
        if Path("reports/results.json").exists() else []
    if verdicts:
        counts = {v: sum(e["verdict"] == v for e in verdicts) for v in ("reproduced", "not reproduced", "not comparable")}
        print("\ndoes the paper hold? " + ", ".join(f"{n} {v}" for v, n in counts.items())
              + " (report.md section 4)")
    print("\nresults: reports/report.md, reports/results.json, reports/eval/*.json")
    print("runs:    make ui  (MLflow on http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
