"""One value per quantity: the committed report (reports/report.md), reports/results.json and
reports/metrics.json agree wherever they show the same number, and a number that is another
quantity (an attacker network applied at another eta than it was trained at) is named apart."""
import json
import re
from pathlib import Path

import pytest

from advgame import attack_table, config
from advgame.config import eta_key
from advgame.report.tables import fmt

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
pytestmark = pytest.mark.skipif(not (REPORTS / "report.md").exists(), reason="no committed report")


def tables_under(md: str, heading: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading line, header, rows) of the first table under every heading that starts with
    `heading`, before the next heading."""
    lines, out = md.splitlines(), []
    for i, line in enumerate(lines):
        if not line.startswith(heading):
            continue
        j = i + 1
        while j < len(lines) and not lines[j].startswith(("|", "#")):
            j += 1
        rows = []
        while j < len(lines) and lines[j].startswith("|"):
            rows.append([c.strip() for c in lines[j].strip().strip("|").split("|")])
            j += 1
        if rows:
            out.append((line, rows[0], rows[2:]))
    return out


def results_of(res: dict, label: str) -> dict:
    """attack -> eta -> cell of a table row: `<defender>` or `<defender> (grey-box)`, the latter
    that defender's `<attack>:grey-box` cells (MagNet's classifier attacked without its detector)."""
    d, grey = label.strip("`").removesuffix(" (grey-box)"), label.strip("`").endswith(" (grey-box)")
    r = res["defenders"][d]["results"]
    return {a.removesuffix(":grey-box"): v for a, v in r.items() if a.endswith(":grey-box") == grey}


@pytest.fixture(scope="module")
def committed():
    md = (REPORTS / "report.md").read_text()
    res = json.loads((REPORTS / "results.json").read_text())
    metrics = json.loads((REPORTS / "metrics.json").read_text())
    return md, res, metrics, eta_key(res["config"]["eta"])


def test_tables_under_reads_a_table_and_stops_at_the_next_heading():
    md = "### A at 1\n\ntext\n\n| d | x |\n|---|---|\n| `a` | 0.100 |\n\n### B\n| d |\n|---|\n"
    assert tables_under(md, "### A") == [("### A at 1", ["d", "x"], [["`a`", "0.100"]])]
    assert tables_under("### A\n\n### B\n| d |\n|---|\n", "### A") == []


def test_every_cell_of_the_main_table_is_the_results_json_cell(committed):
    md, res, _, eta = committed
    (_, header, rows), = tables_under(md, f"### Every defender under every attack at eta {eta} (")
    assert rows and len(header) > 3
    for row in rows:
        got = results_of(res, row[0])
        for a, shown in zip(header[1:], row[1:]):
            assert shown == fmt((got.get(a) or {}).get("0" if a == "clean" else eta)), (row[0], a)


def test_the_other_etas_name_the_attacker_networks_by_the_eta_they_were_trained_at(committed):
    md, res, _, eta = committed
    found = tables_under(md, "### At eta ")
    assert found, "no table at another eta"
    for heading, header, rows in found:
        e = heading.split()[3]
        assert e != eta
        learned = [h for h in header[1:] if attack_table.matches(h.split(" (")[0], threat="learned")]
        # the attackers stages train at the main eta only: applied at e they are not Table 5's AttNet-curr at e
        assert all(h.endswith(f"(trained at {eta})") for h in learned), heading
        for row in rows:
            got = results_of(res, row[0])
            for h, shown in zip(header[1:], row[1:]):
                a = h.split(" (")[0]
                assert shown == fmt((got.get(a) or {}).get("0" if a == "clean" else e)), (heading, row[0], a)


def test_metrics_json_is_the_results_json_headline(committed):
    # the rule of docs/results.md, applied by hand: clean; worst-case; PGD-curr, or for a defender
    # with a detector its full white-box PGD (sanity_attack); the worst attacker network
    _, res, metrics, eta = committed
    defenders = {d: m for d, m in metrics.items() if d != "catmouse"}
    assert set(defenders) == set(res["defenders"])
    for d, row in defenders.items():
        o = res["defenders"][d]
        r = o["results"]
        want = {"clean": r["clean"]["0"]["error"], "worst_case": r["worst-case"][eta]["error"],
                "pgd_curr": r[o.get("sanity_attack", "pgd-curr")][eta]["error"],
                "attnet_curr": max(c[eta]["error"] for a, c in r.items() if a.startswith("attnet-curr:"))}
        assert row == pytest.approx({k: round(v, 4) for k, v in want.items()}, abs=1e-9), d


def test_table5_at_the_main_eta_is_the_evaluation(committed):
    md, res, _, eta = committed
    (_, header, rows), = tables_under(md, "### The paper's Table 5 beside ours")
    names = {"Minimax": "minimax", "Alt": "alt", "Sens FGSM": "sens-fgsm"}
    arch = config.load(ROOT / "params.yaml").table5.arch  # the paper's attacker architecture
    cols = {"FGSM-curr": "fgsm-curr", "AttNet-curr": f"attnet-curr:{arch}"}
    checked = 0
    for row in rows:
        if row[1] != "ours" or names.get(row[0]) not in res["defenders"]:
            continue
        got = res["defenders"][names[row[0]]]["results"]
        for h, shown in zip(header[2:], row[2:]):
            label, e = h.rsplit(" ", 1)
            if e == eta:
                assert shown == fmt(got[cols[label]][eta]), (row[0], h)
                checked += 1
    assert checked


def test_the_verdicts_name_our_round_beside_the_papers(committed):
    md, res, _, _ = committed
    k = res["config"]["rounds"]
    if not k:
        pytest.skip("no cat-and-mouse rounds in the committed study")
    sens = next(v for v in res["verdicts"] if v["claim"] == "abstract:sens-fgsm-robust-to-fgsm-curr")
    assert f"FGSM-{k + 1} on u_{k} here, the paper's FGSM-81 on u_80" in sens["why"]
    assert re.search(rf"Cat-and-mouse curve, rounds 1-{k} \(the paper's Figure 1 runs to round 80\)", md)


def test_every_equivalence_verdict_recomputes_from_the_seed_table(committed):
    """Each Table 5 magnitude judged by equivalence, recomputed by hand from reports/seeds.json:
    the mean over the seeds, its variance sd^2 / k + m (1 - m) / n (seeds' spread plus the test
    images' sampling error), Welch-Satterthwaite df, a t interval, minus the paper's value; inside
    the margin -> reproduced, wholly outside -> not reproduced, else inconclusive."""
    from scipy import stats
    _, res, _, _ = committed
    seeds = json.loads((REPORTS / "seeds.json").read_text())["defenders"]
    checked = 0
    for v in res["verdicts"]:
        if v["kind"] != "magnitude" or not v["rule"].startswith("equivalence"):
            continue
        _, d, _, eta = v["claim"].split(":")
        attack = re.search(r" as `([^`]+)`", v["why"]).group(1)
        n = int(re.search(r" on (\d+) images", v["why"]).group(1))
        per = seeds[d][attack][eta]["per_seed"]
        k, m = len(per), sum(per) / len(per)
        seed_var = (sum((x - m) ** 2 for x in per) / (k - 1)) / k if k > 1 else 0.0
        var = seed_var + m * (1 - m) / n
        df = var ** 2 / (seed_var ** 2 / (k - 1)) if seed_var > 0 else float("inf")
        half = stats.t.ppf(0.975, df) * var ** 0.5
        lo, hi = m - half - v["paper"], m + half - v["paper"]
        assert (v["seeds"], v["ours"]) == (k, pytest.approx(m, abs=1e-4)), v["claim"]
        assert v["ci95"] == pytest.approx([lo, hi], abs=2e-4), v["claim"]
        margin = v["margin"]
        want = ("reproduced" if -margin < lo and hi < margin else
                "not reproduced" if hi < -margin or lo > margin else "inconclusive")
        assert v["verdict"] == want, v["claim"]
        checked += 1
    assert checked >= 10  # Table 5: 3 defenders x 2 attacks x 4 etas, less those at a bound
