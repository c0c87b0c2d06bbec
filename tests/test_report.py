"""The report stage: results.json follows the contract, report.md holds every section, missing
numbers render as n/a, and the answers follow the numbers (they flip when the numbers flip)."""
import csv
import json
import re

import pytest
import torch

from advgame import config, masks, names
from advgame.artifacts import save_checkpoint, save_json, save_torch
from advgame.models import SmallCNN, attacker_meta, build_attacker, classifier_meta
from advgame.pipeline import generator as pipeline
from advgame.report import answers as report_answers
from advgame.report import render as report
from advgame.report import study as report_study
from advgame.report import tables as report_tables

CONTRACT = {"schema_version", "commit", "config", "defenders", "catmouse", "hosts", "verdicts", "strength", "training",
            "game"}
CONFIG_KEYS = {"dataset", "eta", "etas", "eval", "art", "defenders", "rounds", "seeds", "device"}


def res(err: float, n: int = 1000) -> dict:
    return {"error": err, "ci95": [max(0.0, err - 0.02), min(1.0, err + 0.02)], "n": n}


def eval_obj(d: str, errs: dict, sanity: dict | None = None, detail: dict | None = None) -> dict:
    """errs: {attack: {eta_key: error}} -> an evaluation object of the results contract."""
    out = {"defender": d, "results": {a: {e: res(v) for e, v in by.items()} for a, by in errs.items()},
           "sanity": sanity or {k: True for k in report_tables.SANITY},
           # per-image outcomes: the first round(error * n) images are the errors
           "per_image": {a: {e: masks.pack([i < round(v * 1000) for i in range(1000)]) for e, v in by.items()}
                         for a, by in errs.items()}}
    if detail:
        out["sanity_detail"] = detail
    return out


def standard(clean=0.02, fgsm=0.3, pgd=0.6, att=0.4, worst=0.7, extra: dict | None = None) -> dict:
    errs = {"clean": {"0": clean},
            "fgsm-curr": {"0.3": fgsm, "0.4": min(1, fgsm + 0.1)},
            "pgd-curr": {"0.3": pgd, "0.4": min(1, pgd + 0.1)},
            "attnet-curr:mlp": {"0.3": att, "0.4": min(1, att + 0.1)},
            "attnet-curr:conv": {"0.3": min(1, att + 0.05)},
            "fgsm-1": {"0.3": 0.5}, "fgsm-3": {"0.3": 0.45},
            "apgd-ce": {"0.3": min(1, pgd + 0.01)}, "apgd-dlr": {"0.3": pgd}, "square": {"0.3": pgd - 0.1},
            "attnet-transfer:baseline:mlp": {"0.3": 0.2},
            "worst-case": {"0.3": worst, "0.4": min(1, worst + 0.1)}}
    errs.update(extra or {})
    return errs


PARAMS = {
    "study": {"defenders": ["baseline", "catmouse", "fgsm-at", "sens-fgsm", "alt", "minimax", "maximin",
                            "pgd-at", "magnet"]},
    "attack": {"eta": 0.3},
    "eval": {"etas": [0.3, 0.4], "pgd_steps": 3},
    "catmouse": {"rounds": 3, "matrix_rounds": [0, 1, 3]},
    "report": {"examples": 4},
}


def make_study(tmp_path, params: dict = PARAMS, evals: dict | None = None, catmouse: bool = True,
               models: bool = True):
    p = config.parse(params)
    if evals is None:
        evals = {
            "baseline": eval_obj("baseline", standard(fgsm=0.9, pgd=1.0, att=0.99, worst=1.0)),
            "adv-fgsm-3": eval_obj("adv-fgsm-3", standard(fgsm=0.7, pgd=0.95, worst=0.99)),
            "fgsm-at": eval_obj("fgsm-at", standard(fgsm=0.1, pgd=0.5)),
            "sens-fgsm": eval_obj("sens-fgsm", standard(fgsm=0.05, pgd=0.8, att=0.9, worst=0.95),
                                  sanity={**{k: True for k in report_tables.SANITY}, "pgd_ge_fgsm": False,
                                          "pgd_not_below_apgd": None},
                                  detail={"pgd_ge_fgsm": "PGD 0.012 < FGSM 0.050 at eta 0.4 (masking?)"}),
            "alt": eval_obj("alt", {k: v for k, v in standard(worst=0.6).items() if k != "apgd-ce"}),
            "minimax": eval_obj("minimax", standard(worst=0.3, pgd=0.25, att=0.1)),
            "pgd-at": eval_obj("pgd-at", standard(worst=0.2, pgd=0.15)),
            "magnet": eval_obj("magnet", standard(worst=0.8, extra={"pgd-curr:grey-box": {"0.3": 0.33},
                                                                     "fgsm-curr:grey-box": {"0.3": 0.44}})),
        }  # maximin deliberately absent
    for d, o in evals.items():
        save_json(o, tmp_path / names.run_path(names.eval_path(d)))
    for s, sec in {"prepare": 3.0, "baseline": 20.0, "round-1": 4.0, "minimax": 30.0, "eval-minimax": 7.5,
                   "eval-gone": 9.0}.items():
        save_json({"stage": s, "device": "cpu"}, tmp_path / "reports/stages" / f"{s}.json")
        save_json({"stage": s, "seconds": sec}, tmp_path / names.timing_path(s))
    save_json({"stage": "minimax", "device": "cpu", "own_attnet_error": 0.04}, tmp_path / "reports/stages/minimax.json")
    save_json({"stage": "baseline", "device": "cpu", "training": {"baseline": {
        "criterion": "clean error", "epochs": 4, "cap": 10, "best_epoch": 2, "capped": False, "val": 0.03,
        "curve": [0.05, 0.03, 0.04, 0.04]}}}, tmp_path / "reports/stages/baseline.json")
    (tmp_path / "dvc.yaml").write_text(pipeline.render(p))  # the report times this pipeline's stages
    save_json({"minimax": {"attnet-transfer:baseline:mlp": {"0.3": {"error": 0.2, "ci95": [0.15, 0.26], "n": 200}}}},
              tmp_path / "reports/transfer.json")
    save_json({"defender": "minimax", "results": {"fgsm-curr": {"0.4": {"error": 0.41, "ci95": [0.3, 0.5], "n": 200}},
                                                  "attnet-curr:mlp": {"0.4": {"error": 0.52, "ci95": [0.4, 0.6], "n": 200}},
                                                  "attnet-paper:mlp": {"0.3": {"error": 0.06, "ci95": [0.03, 0.1], "n": 200},
                                                                       "0.4": {"error": 0.33, "ci95": [0.27, 0.4], "n": 200}}}},
              tmp_path / "reports/table5/minimax.json")
    save_json({"dataset": "mnist5k", "train": {"shape": [4000, 1, 28, 28], "sha256": "abc123"},
               "test": {"shape": [1000, 1, 28, 28], "sha256": "def456"}}, tmp_path / "data/prepared/meta.json")
    if catmouse:
        cm = tmp_path / names.run_path(names.CATMOUSE)
        cm.mkdir(parents=True)
        with open(cm / "curve.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["k", "clean", "own_attack", "next_attack"])
            w.writerows([[1, 0.03, 0.05, 0.95], [2, 0.03, 0.04, 0.62], [3, 0.04, 0.06, 0.71]])
        save_json({"rounds": [0, 1, 3], "attacks": ["fgsm-1", "fgsm-2", "fgsm-4"],
                   "error": [[0.9, 0.5, 0.6], [0.1, 0.95, 0.5], [0.4, 0.3, 0.71]], "eta": 0.3}, cm / "matrix.json")
        (cm / "curve.png").write_bytes(b"png")
    if models:
        torch.manual_seed(0)
        x = torch.rand(6, 1, 28, 28)
        save_torch({"x": x, "y": torch.arange(6)}, tmp_path / "data/prepared/test.pt")
        save_checkpoint(SmallCNN(), classifier_meta("smallcnn", x.shape, 10), tmp_path / "models/baseline.pt")
        save_checkpoint(build_attacker("mlp", (1, 28, 28), hidden=16), attacker_meta("mlp", x.shape, 16, 8),
                        tmp_path / "models/attackers/baseline/mlp.pt")
    return p


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full study built once (figures take a few seconds); the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("study")
    p = make_study(tmp_path)
    out = report.build_report(p, tmp_path)
    return p, out, json.loads((tmp_path / "reports/results.json").read_text()), \
        (tmp_path / "reports/report.md").read_text()


def row(md: str, label: str, header_has: str) -> tuple[list[str], list[str]]:
    """The header and the row of `label` in the first table whose header contains `header_has`."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| defender") and header_has in line:
            header = [c.strip() for c in line.strip("|").split("|")]
            for r in lines[i + 2:]:
                if not r.startswith("|"):
                    break
                cells = [c.strip() for c in r.strip("|").split("|")]
                if cells[0] == label:
                    return header, cells
    raise AssertionError(f"no row {label} under a header with {header_has}")


def test_results_json_follows_the_contract(built):
    p, out, res, _ = built
    assert set(res) == CONTRACT
    assert set(res["config"]) == CONFIG_KEYS
    assert res["config"]["defenders"] == ["baseline", "adv-fgsm-3", "fgsm-at", "sens-fgsm", "alt", "minimax",
                                          "maximin", "pgd-at", "magnet"]
    assert res["config"]["rounds"] == 3 and res["config"]["eta"] == 0.3 and res["config"]["dataset"] == "mnist5k"
    assert "maximin" not in res["defenders"] and res["defenders"]["minimax"]["results"]["pgd-curr"]["0.3"]["error"] == 0.25
    assert res["catmouse"][1] == {"k": 2, "clean": 0.03, "own_attack": 0.04, "next_attack": 0.62}
    assert res["schema_version"] == 1 and res["commit"] == "unknown"  # built outside a stage: no git here
    # no wall-clock time in the committed results: a rerun of the same inputs changes no byte
    assert "seconds" not in json.dumps(res) and "timing" not in res


def test_the_games_exploitability_is_a_fresh_attackers_error_minus_the_co_trained_ones(built):
    p, out, res, md = built
    assert set(res["game"]) == {"minimax"}  # alt has no stage report with its co-trained error, maximin no evaluation
    g = res["game"]["minimax"]
    assert g["cotrained"]["error"] == 0.04 and g["cotrained"]["n"] == 1000 and g["cotrained"]["arch"] == "mlp"
    assert g["fresh"]["mlp"]["error"] == 0.1 and abs(g["exploitability"]["mlp"] - 0.06) < 1e-9
    assert abs(g["exploitability"]["conv"] - 0.11) < 1e-9 and g["same_images"]
    assert g["setting"] == {"k": p.game.k, "lr": 0.001, "lr_attacker": 0.001, "epochs": p.game.epochs,
                            "attacker_arch": "mlp", "population": False, "gamma": p.game.gamma}
    assert g["curve"] == []  # this study's game ran no probe
    assert "| `minimax` | 0.040 (mlp, n = 1000) | 0.100 (+0.060) | 0.150 (+0.110) |" in md
    assert "Largest exploitability: +0.110 (`minimax`); the game did not reach an equilibrium" in md


def test_the_games_probe_curve_reaches_results_json_the_report_and_a_figure(tmp_path):
    p = make_study(tmp_path, {**PARAMS, "game": {"epochs": 3}}, models=False)
    (tmp_path / "reports/game").mkdir(parents=True)
    (tmp_path / "reports/game/minimax.csv").write_text(
        "epoch,defender_loss,attacker_objective,probe_fresh_error,probe_cotrained_error,exploitability\n"
        "1,1.0,0.5,,,\n2,0.8,0.6,0.5,0.1,0.4\n3,0.7,0.6,0.3,0.1,0.2\n")
    out = report.build_report(p, tmp_path, examples=False)
    res = json.loads((tmp_path / "reports/results.json").read_text())
    assert res["game"]["minimax"]["curve"] == [
        {"epoch": 2, "fresh": 0.5, "cotrained": 0.1, "exploitability": 0.4},
        {"epoch": 3, "fresh": 0.3, "cotrained": 0.1, "exploitability": 0.2}]
    assert "- `minimax`: 2: +0.400, 3: +0.200" in out["report"].read_text()
    assert "exploitability.png" in {f.name for f in out["figures"]}


def test_the_report_says_whether_minimax_is_no_worse_than_alt_and_maximin_against_fresh_attackers():
    from advgame.report.exploitability import minimax_property

    def entry(**fresh):
        return {"fresh": {a: {"error": e, "ci95": [e - 0.03, e + 0.03], "n": 1000} for a, e in fresh.items()}}

    game = {"minimax": entry(mlp=0.20, conv=0.50), "alt": entry(mlp=0.25, conv=0.48),
            "maximin": entry(mlp=0.30, conv=0.40)}
    text = minimax_property(game, ["mlp", "conv"])[0]
    assert "`alt` and `maximin`" in text and text.endswith(
        "does not hold here: conv: 0.500 against `alt`'s 0.480 (the 95% intervals overlap); "
        "conv: 0.500 against `maximin`'s 0.400 (the 95% intervals do not overlap).")
    game["minimax"] = entry(mlp=0.20, conv=0.40)
    assert minimax_property(game, ["mlp", "conv"])[0].endswith("holds.")
    assert minimax_property({"minimax": game["minimax"]}, ["mlp"]) == []  # nothing to compare with


def test_summary_times_this_pipelines_stages_from_the_untracked_timings(built):
    from advgame.pipeline import cost
    p, out, res, md = built
    timing = cost.timings(out["report"].parent.parent)
    assert timing["eval-minimax"]["seconds"] == 7.5 and timing["baseline"]["seconds"] == 20.0
    assert list(timing)[:2] == ["prepare", "baseline"]  # dvc.yaml's order
    assert "eval-gone" not in timing  # not a stage of this study
    table = cost.table(timing, {})  # timings without clocks or passes (written before the cost table)
    assert table["study"]["body_s"] == 64.5 and table["stages"]["baseline"]["wall_s"] is None
    assert "| **study** | 0 | 0.0 | 64.5 | - |" in cost.markdown(table)


def test_each_models_training_record_is_in_the_results_the_report_and_the_plots(built):
    from advgame import names
    p, out, res, md = built
    assert res["training"] == {"baseline": {"criterion": "clean error", "epochs": 4, "cap": 10, "best_epoch": 2,
                                            "capped": False, "val": 0.03}}
    assert "| `baseline` | clean error | 4 / 10 | 2 | 0.030 | no |" in md
    assert "No model stopped at its epoch cap" in md and "figures/training.png" in md
    root = out["report"].parent.parent
    assert (root / names.PLOT_DATA["training"] / "baseline.csv").read_text().splitlines()[1:] == \
        ["1,0.05", "2,0.03", "3,0.04", "4,0.04"]


def test_transfer_and_table5_stages_join_the_report(built):
    p, out, res, md = built
    cell = res["defenders"]["minimax"]["results"]["attnet-transfer:baseline:mlp"]["0.3"]
    assert cell["error"] == 0.2
    assert "transfer_le_white_box" in res["defenders"]["minimax"]["sanity"]
    ours = next(line for line in md.splitlines() if line.startswith("| Minimax | ours"))
    assert "0.410" in ours and "0.520" in ours  # Table 5 at eta 0.4 from the table5 stage


def test_headline_metrics_and_plot_data(built):
    # the headline stage's files (stages/headline.py), from the evaluations and the rounds
    from advgame import names
    from advgame.report import exports
    from advgame.report.study import load_study
    p, out, res, md = built
    root = out["report"].parent.parent
    assert not (root / names.METRICS).exists()  # not the report's: the headline stage's
    assert (root / names.PLOT_DATA["gamma_sweep"]).read_text().startswith("gamma,")
    exports.write_headline(load_study(p, root), root, names.METRICS, names.PLOT_DATA)
    m = json.loads((root / "reports/metrics.json").read_text())
    assert m["minimax"]["pgd_curr"] == 0.25 and m["minimax"]["worst_case"] == 0.3
    assert "error" not in json.dumps(m)  # DVC reads a nested key named error as a load failure
    assert sum(len(v) for v in m.values()) <= 60
    eta = (root / "reports/plots/eta_sweep.csv").read_text().splitlines()
    assert eta[0].startswith("eta,") and "minimax" in eta[0] and len(eta) == 3  # header + etas 0.3, 0.4
    mx = (root / "reports/plots/catmouse_matrix.csv").read_text().splitlines()
    assert mx[0] == "j,u_0,u_1,u_3" and mx[1].startswith("1,0.9,0.1,0.4")


def test_report_md_has_every_section(built):
    p, out, res, md = built
    for d in res["config"]["defenders"]:
        assert f"`{d}`" in md
    assert "no evaluation found for `maximin`" in md
    for h in ("Table 5", "Q1.", "Q2.", "Q3.", "Q4.", "Sanity checks", "Timing", "What is our reconstruction"):
        assert h in md
    assert "0.218" in md and "0.965" in md  # the paper's numbers, quoted
    assert "advgame summary" in md and "20.0" not in md  # the timing section points to the untracked times
    assert "abc123" in md and "def456" in md  # data checksums
    assert "(catmouse/curve.png)" in md and "catmouse/matrix.png" not in md  # only existing figures are linked
    for f in ("heatmap.png", "eta_sweep.png", "examples.png"):
        assert (out["report"].parent / "figures" / f).stat().st_size > 1000
        assert f"(figures/{f})" in md
    assert "K = 3 rounds (paper: 80)" in md and "mnist5k" in md


def test_missing_attack_and_eta_render_as_na(built):
    _, _, _, md = built
    header, cells = row(md, "`alt`", "apgd-ce")
    assert cells[header.index("apgd-ce")] == "n/a"
    header, cells = row(md, "`minimax`", "apgd-ce")
    assert cells[header.index("apgd-ce")].startswith("0.260")
    # grey-box variants form their own row
    header, cells = row(md, "`magnet (grey-box)`", "pgd-curr")
    assert cells[header.index("pgd-curr")].startswith("0.330") and cells[header.index("clean")] == "n/a"
    assert "grey-box setting (the attacker sees the bare classifier only): fgsm-curr 0.440" in md
    # Table 5: ours at 0.3 from the evaluation, 0.4 from the table5 stage (an attacker retrained
    # at that eta, not the eval's 0.3 attacker), n/a at 0.5 and 0.6 (not run); with intervals
    line = next(l for l in md.splitlines() if l.startswith("| Minimax | ours"))
    cells = [c.split(" (")[0].strip() for c in line.strip("|").split("|")]
    assert cells[2:6] == ["0.300", "0.100", "0.410", "0.520"] and cells[6:] == ["n/a"] * 4
    assert "(0.400–0.600)" in line
    # the paper's own attacker network (the table5 stage, every eta): AttNet columns only
    line = next(l for l in md.splitlines() if l.startswith("| Minimax | ours, the paper's AttNet"))
    cells = [c.split(" (")[0].strip() for c in line.strip("|").split("|")]
    assert cells[2:6] == ["", "0.060", "", "0.330"] and cells[7] == "n/a"


def test_sanity_section_explains_failures(built):
    _, _, _, md = built
    header, cells = row(md, "`sens-fgsm`", "pgd_ge_fgsm")
    assert cells[header.index("pgd_ge_fgsm")] == "**FAIL**"
    assert cells[header.index("pgd_not_below_apgd")] == "n/a"
    assert "`sens-fgsm` fails `pgd_ge_fgsm`" in md and "PGD 0.012 < FGSM 0.050" in md


def _study(**evals) -> report_study.Study:
    p = config.parse(PARAMS)
    return report_study.Study(p, {d: eval_obj(d, e) for d, e in evals.items()})


def test_q4_verdict_follows_the_numbers():
    better = _study(minimax=standard(worst=0.2), alt=standard(worst=0.6), **{"sens-fgsm": standard(worst=0.9)})
    worse = _study(minimax=standard(worst=0.9), alt=standard(worst=0.6), **{"sens-fgsm": standard(worst=0.5)})
    tie = _study(minimax=standard(worst=0.6), alt=standard(worst=0.602), **{"sens-fgsm": standard(worst=0.598)})
    assert "**Yes**: under `worst-case`" in report_answers.q4(better)
    assert "**No**: under `worst-case`" in report_answers.q4(worse) and "`alt`, `sens-fgsm`" in report_answers.q4(worse)
    assert "**No difference shown**" in report_answers.q4(tie)
    mixed = _study(minimax=standard(worst=0.6), alt=standard(worst=0.602), **{"sens-fgsm": standard(worst=0.9)})
    assert "**Not better than every baseline**" in report_answers.q4(mixed)
    assert "no difference shown from `alt`; lower than `sens-fgsm`" in report_answers.q4(mixed)
    assert "`minimax` 0.200 vs `alt` 0.600 (McNemar p = " in report_answers.q4(better)  # numbers are quoted
    assert "n/a" in report_answers.q4(_study(minimax=standard()))
    # led by the strongest defense, not only the paper's baselines; decided within Q4's Holm family
    lead = _study(minimax=standard(worst=0.6), alt=standard(worst=0.9), **{"sens-fgsm": standard(worst=0.95)},
                  **{"pgd-at": standard(worst=0.2), "trades": standard(worst=0.3)})
    text = lead.family(report_answers.q4)
    first = text.splitlines()[1:3]
    assert first[0].startswith("- `pgd-at` 0.200: minimax higher") and first[1].startswith("- `trades` 0.300")
    assert "Holm" in first[0] and text.index("`pgd-at` 0.200") < text.index("Against the paper's baselines")


def test_q2_and_q1_follow_the_numbers():
    wins = _study(**{"sens-fgsm": standard(fgsm=0.05, pgd=0.1), "adv-fgsm-3": standard(fgsm=0.7)})
    loses = _study(**{"sens-fgsm": standard(fgsm=0.8, pgd=0.9), "adv-fgsm-3": standard(fgsm=0.3)})
    assert "Sens-FGSM is lower than `adv-fgsm-3`" in report_answers.q2(wins)
    assert "Why:" not in report_answers.q2(wins) and "The ablation did not run" in report_answers.q2(wins)
    assert "Sens-FGSM is higher than `adv-fgsm-3`" in report_answers.q2(loses)
    s1 = _study(**{"sens-fgsm": standard(worst=0.2), "pgd-at": standard(worst=0.6), "trades": standard(worst=0.1)})
    text = report_answers.q1(s1)
    assert "lower than `pgd-at`" in text and "higher than `trades`" in text and "1 of 1 training seed" in text


def test_q3_verdicts():
    s = _study(baseline=standard(pgd=1.0, worst=1.0), minimax=standard(pgd=0.2, att=0.1, worst=0.3))
    text = report_answers.q3(s)
    base = next(l for l in text.splitlines() if l.startswith("- `baseline`"))
    mm = next(l for l in text.splitlines() if l.startswith("- `minimax`"))
    assert "**falls flat**" in base and "**holds**" in mm


def test_tiny_config_with_baseline_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = {"study": {"defenders": ["baseline"]}, "eval": {"etas": [0.3]}}
    p = make_study(tmp_path, params, evals={"baseline": eval_obj("baseline", {"clean": {"0": 0.05},
                                                                               "fgsm-curr": {"0.3": 0.9}})},
                   catmouse=False, models=False)
    out = report.build_report(p, ".")
    res = json.loads(out["results"].read_text())
    md = out["report"].read_text()
    assert set(res) == CONTRACT and res["catmouse"] == [] and res["config"]["rounds"] == 0
    assert md.count("Not answerable") >= 3 and "`baseline`" in md
    assert not (tmp_path / "reports/figures/examples.png").exists()
    assert re.search(r"\| Sens FGSM \| ours \| n/a", md)


def test_compare_and_fmt():
    assert report_tables.compare(res(0.1), res(0.5)) == "lower"
    assert report_tables.compare(res(0.5), res(0.1)) == "higher"
    assert report_tables.compare(res(0.5), res(0.52)) == "overlap"
    assert report_tables.compare(None, res(0.1)) is None
    assert report_tables.fmt(None) == "n/a"
    assert report_tables.fmt({"error": 0.5, "sd": 0.01, "ci95": [0.4, 0.6], "n": 10}) == "0.500±0.010 (0.400–0.600)"


def test_gamma_sweep_figure_is_built_from_the_sweep_stages(tmp_path):
    params = {**PARAMS, "game": {"gamma": 10.0, "gamma_sweep": [1.0, 10.0, 1000.0]}}
    p = make_study(tmp_path, params, models=False)
    for g, err in ((1.0, 0.7), (1000.0, 0.4)):
        name = names.sweep_name(g)
        save_json({"gamma": g, "eta": 0.3, "penalty_ratio_last_epoch": g / 100,
                   "results": {"clean": {"error": 0.02, "ci95": [0.01, 0.04], "n": 200},
                               "pgd-curr": {"error": err, "ci95": [err - 0.05, err + 0.05], "n": 200},
                               "attnet-curr:mlp": {"error": err / 2, "ci95": [0, 1], "n": 200}}},
                  tmp_path / "reports/sweep" / f"{name}.json")
    save_json({"gamma": 5.0, "eta": 0.3, "results": {}}, tmp_path / "reports/sweep/stale.json")  # not in params
    save_json({"stage": "minimax", "seconds": 1.0, "penalty_ratio_last_epoch": 0.12},
              tmp_path / "reports/stages/minimax.json")
    (tmp_path / "reports/game").mkdir(parents=True)
    for mode in ("alt", "minimax"):
        (tmp_path / f"reports/game/{mode}.csv").write_text(
            "epoch,defender_loss,attacker_objective\n1,1.0,0.5\n2,0.8,0.6\n")
    out = report.build_report(p, tmp_path, examples=False)
    md = out["report"].read_text()
    figs = {f.name for f in out["figures"]}
    assert {"gamma_sweep.png", "convergence.png"} <= figs
    # one row per point: alt (gamma 0), the sweep stages and the study's own minimax
    sweep = md[md.index("### The minimax gamma sweep"):]  # (the leaderboard's rows start "| 1 | `" too)
    rows = [l for l in sweep.splitlines() if re.match(r"\| (0|1|10|1000) \| `", l)]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "1", "10", "1000"]
    assert "`sweep-minimax-g1000`" in md and "0.12 of f" in md and "| 5 |" not in sweep
    pts = report_study.load_study(p, tmp_path).sweep
    assert [q["pgd-curr"]["error"] for q in pts if q["source"].startswith("sweep")] == [0.7, 0.4]


def test_attacker_diagnostics_table(tmp_path):
    p = make_study(tmp_path, models=False)
    save_json({"stage": "attackers-baseline", "seconds": 3.0, "attnet_mlp_test_error": 0.934,
               "attnet_mlp_pert_std": 0.149, "attnet_mlp_saturated": 0.178, "attnet_mlp_epochs": 3},
              tmp_path / "reports/stages/attackers-baseline.json")
    md = report.build_report(p, tmp_path, examples=False)["report"].read_text()
    assert "| `baseline` | mlp | 0.934 | 0.149 | 0.178 | 3 |" in md


def test_leaderboard_ranks_by_worst_case_and_names_the_strongest_single_attack():
    from advgame.report.leaderboard import LITERATURE, study_leaderboard
    from advgame.report.tables import fmt

    def ev(clean, worst, **attacks):
        res = {"clean": {"0": {"error": clean, "ci95": [0, 1], "n": 10}},
               "worst-case": {"0.3": {"error": worst, "ci95": [0, 1], "n": 10}},
               "art:apgd-ce": {"0.3": {"error": 0.99, "ci95": [0, 1], "n": 4}}}  # subset: never the breaker
        res.update({a.replace("_", "-"): {"0.3": {"error": e, "ci95": [0, 1], "n": 10}} for a, e in attacks.items()})
        return {"results": res}

    header, body = study_leaderboard({"weak": ev(0.01, 0.9, pgd_curr=0.9, fgsm_curr=0.8),
                                      "pgd-at": ev(0.03, 0.3, pgd_curr=0.2, pgd_adaptive=0.2, fgsm_curr=0.1,
                                                   apgd_ce=0.28, square=0.3)}, "0.3", fmt)
    assert [r[1] for r in body] == ["`pgd-at`", "`weak`"]
    # a tie goes to the earlier column; a cascade cell (error after it, everything before counted) is no single attack
    assert body[0][4] == "0.700" and body[0][5] == "`pgd-curr` (0.200)"
    assert body[1][5] == "`pgd-curr` (0.900)"
    assert body[0][6] == LITERATURE["pgd-at"] and body[1][6] == ""
    assert len(header) == len(body[0])


def test_results_name_the_hosts_the_stages_ran_on():
    from advgame.report.study import hosts

    env = {"device": "cpu", "threads": 2, "torch": "2.14.1", "cpu": "Xeon", "cpu_capability": "AVX512",
           "mkl": "2024.2", "onednn": "3.12.0", "deterministic": True}
    got = hosts({"check-params": {}, "prepare": env, "baseline": env,
                 "eval-x": {**env, "cpu_capability": "AVX2", "mkl_cbwr": "AVX2"}})
    assert [h["stages"] for h in got] == [["prepare", "baseline"], ["eval-x"]]
    assert got[0] == {**{k: v for k, v in env.items() if k != "deterministic"}, "stages": ["prepare", "baseline"]}
    assert got[1]["cpu_capability"] == "AVX2" and got[1]["mkl_cbwr"] == "AVX2"


def test_compute_env_names_the_cpu_and_the_kernel_libraries():
    import torch

    from advgame.runtime import compute_env
    env = compute_env(torch.device("cpu"))
    assert env["cpu"] and env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    if torch.backends.mkldnn.is_available():
        assert env["onednn"][0].isdigit()
    if torch.backends.mkl.is_available():
        assert env["mkl"][0].isdigit()


def test_the_cascade_table_shows_each_attack_and_the_saturation_rerun():
    from advgame.report.cascade import cascade_section

    s = _study(**{"pgd-at": {"clean": {"0": 0.02}, "pgd-curr": {"0.3": 0.2}, "apgd-ce": {"0.3": 0.23},
                             "square": {"0.3": 0.24}, "worst-case": {"0.3": 0.24}},
                  "weak": {"clean": {"0": 0.01}, "pgd-curr": {"0.3": 0.9}, "worst-case": {"0.3": 0.9}}})
    s.defenders["pgd-at"].update(
        cascade={"0.3": {"apgd-ce": {"ran_on": 800, "new": 30}, "square": {"ran_on": 770, "new": 10}}},
        unique={"0.3": {"pgd-curr": 5, "apgd-ce": 30, "square": 10, "fgsm-curr": 0}},
        saturation={"eta": "0.3", "n": 100, "attacked": 76, "more": 1, "change": 0.01})
    md = "\n".join(cascade_section(s))
    assert "| `pgd-at` | 0.200 | 0.230 (+30 of 800) | 0.240 (+10 of 770) | +1 of 76 (first 100): +0.010 |" in md
    assert "`weak`" not in md.split("Images only one attack")[0]  # no cascade ran: no row
    assert "| defender | pgd-curr | apgd-ce | square |" in md and "fgsm-curr" not in md.split("Images only")[1]
    e = s.params.eval  # the budget as params set it, random starts included
    assert f"APGD {e.apgd_iters} iterations from {e.apgd_restarts} random start(s)" in md
    assert cascade_section(_study(weak={"worst-case": {"0.3": 0.9}})) == []


def test_the_report_from_the_published_inputs_is_the_report_from_dvcs_cache(tmp_path):
    # one study read two ways: from the files its stages keep in DVC's cache, and from the publish
    # stage's copies alone (a clone without DVC's cache): the same results, report and figures
    import shutil

    from advgame.report import publish

    a, b = tmp_path / "cache", tmp_path / "clone"
    p = make_study(a)
    shutil.copytree(a, b)
    report.build_report(p, a)
    deps = pipeline.stages(p)["publish"]["deps"]
    got = publish.publish(p, [d for d in deps if (b / d).exists()], b)
    assert got["examples"] and got["published"] > 10
    for gone in ("models", "data", names.RUNS, "reports/stages", "reports/table5", "reports/transfer.json"):
        shutil.rmtree(b / gone) if (b / gone).is_dir() else (b / gone).unlink()
    out = report.build_report(p, b, inputs=b / publish.INPUTS)
    assert (b / "reports/results.json").read_text() == (a / "reports/results.json").read_text()
    assert (b / "reports/report.md").read_text() == (a / "reports/report.md").read_text()
    assert sorted(f.name for f in out["figures"]) == sorted(f.name for f in (a / "reports/figures").glob("*.png"))
    # the folder is rebuilt whole: a file of an earlier run does not survive
    (b / publish.INPUTS / "stale.json").write_text("{}")
    publish.publish(p, [], b)
    assert not (b / publish.INPUTS / "stale.json").exists()
