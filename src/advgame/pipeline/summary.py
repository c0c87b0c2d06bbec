"""Prints the headline numbers after `make study`, what each stage's last run here cost against
this host's compute floor (advgame.pipeline.cost), and where the results are."""
from __future__ import annotations

import json
from pathlib import Path

from advgame import attack_table, config, names
from advgame.pipeline import cost


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
    res = json.loads(results.read_text()) if results.exists() else {}
    verdicts = res.get("verdicts", [])
    training = res.get("training", {})
    if training:
        capped = [m for m, r in training.items() if r.get("capped")]
        print(f"\ntraining: {len(training)} models, {len(capped)} stopped by their epoch cap, the rest on the "
              "validation plateau (report.md section 1)" + (f": {', '.join(capped)}" if capped else ""))
    if verdicts:
        counts = {v: sum(e["verdict"] == v for e in verdicts)
                  for v in ("reproduced", "not reproduced", "inconclusive", "not comparable")}
        print("\ndoes the paper hold? " + ", ".join(f"{n} {v}" for v, n in counts.items())
              + " (report.md section 4)")
    if Path(names.TIMINGS).is_dir():
        print(f"\nwhat each stage's last run here cost ({names.TIMINGS}/), against this host's floor "
              f"(measured now unless {cost.COST} has it for this run):\n")
        print(cost.markdown(cost.measure()))
    print(f"\nresults: reports/report.md, {names.RESULTS}, reports/eval/*.json")
    print("runs:    make ui  (MLflow on http://127.0.0.1:5000)")


if __name__ == "__main__":
    main()
