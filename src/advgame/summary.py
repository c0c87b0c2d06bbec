"""Prints the headline numbers after `make study` and where the results are."""
from __future__ import annotations

import json
from pathlib import Path

from . import config


def main() -> None:
    p = config.load()
    key = config.eta_key(p.attack.eta)
    rows = []
    for f in sorted(Path("reports/eval").glob("*.json")):
        r = json.loads(f.read_text())
        res = r["results"]
        get = lambda a: res.get(a, {}).get(key, {}).get("error", float("nan"))  # noqa: E731
        rows.append((r["defender"], res["clean"]["0"]["error"], get("fgsm-curr"), get("pgd-curr"),
                     get("worst-case")))
    print(f"\nerror on {p.data.dataset} test (eta {key}):")
    print(f"  {'defender':<14}{'clean':>8}{'fgsm-curr':>11}{'pgd-curr':>10}{'worst-case':>12}")
    for d, *v in rows:
        print(f"  {d:<14}" + "".join(f"{x:>{w}.3f}" for x, w in zip(v, (8, 11, 10, 12))))
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
