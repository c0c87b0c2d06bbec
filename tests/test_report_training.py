"""The report's training records (report/training.py): gathered from every stage that trains,
in results.json without curves, the capped models listed, the curves written for dvc plots."""
import csv
import json

from advgame import config
from advgame.plotting import pyplot, save
from advgame.report import training


def record(curve, capped=False, criterion="clean error", cap=5):
    best = curve.index(min(curve)) + 1
    return {"criterion": criterion, "epochs": len(curve), "cap": cap, "best_epoch": best,
            "capped": capped, "val": min(curve), "curve": curve}


RECORDS = {"baseline": record([0.1, 0.05, 0.06]),
           "pgd-at": record([0.9, 0.8, 0.7, 0.6], capped=True, criterion="PGD-20 error", cap=4),
           "minimax": record([0.3, 0.2], capped=True, criterion="error vs the co-trained attacker (no early stop)", cap=2),
           "attnet:mlp@baseline": record([0.5, 0.9], criterion="fooling rate")}


def test_records_are_gathered_from_stage_reports_ablations_and_the_sweep(tmp_path):
    p = config.parse({"game": {"gamma_sweep": [0.1]}, "table5": {"defenders": []}})
    st = tmp_path / "reports/stages"
    st.mkdir(parents=True)
    (st / "baseline.json").write_text(json.dumps({"stage": "baseline", "training": {"baseline": RECORDS["baseline"]}}))
    (st / "prepare.json").write_text(json.dumps({"stage": "prepare"}))  # trains nothing
    sweep = tmp_path / "reports/sweep"
    sweep.mkdir(parents=True)
    (sweep / "sweep-minimax-g0p1.json").write_text(json.dumps({"training": {"sweep-minimax-g0p1": RECORDS["minimax"]}}))
    got = training.load_training(p, tmp_path, sorted(st.glob("*.json")),
                                 {"smooth": {"training": {"ablation-smooth": RECORDS["pgd-at"]}}})
    assert set(got) == {"baseline", "sweep-minimax-g0p1", "ablation-smooth"}
    entries = training.results_entries(got)
    assert "curve" not in entries["baseline"] and entries["baseline"]["best_epoch"] == 2


def test_the_section_lists_every_capped_model_and_why_a_game_is():
    md = "\n".join(training.section(RECORDS))
    assert "**2 of 4 models stopped at their epoch cap**" in md
    assert "robust training (1; the last epoch's change of the criterion, + = better): " \
        "`pgd-at` (+0.100 in epoch 4: still improving)" in md
    assert "game defenders (no early stop) (1): `minimax`: the game has no early stop" in md
    assert "| `baseline` | clean error | 3 / 5 | 2 | 0.050 | no |" in md
    done = {m: r for m, r in RECORDS.items() if not r["capped"]}
    assert "No model stopped at its epoch cap" in "\n".join(training.section(done))


def test_the_last_epochs_gain_is_read_in_the_criterions_direction():
    assert abs(training.last_gain(record([0.9, 0.8])) - 0.1) < 1e-9              # an error fell
    assert abs(training.last_gain(record([0.5, 0.4], criterion="fooling rate")) + 0.1) < 1e-9  # a fooling rate fell
    assert training.last_gain(record([0.5])) is None
    md = "\n".join(training.section({"attnet:mlp@x": record([0.2, 0.25], capped=True, criterion="fooling rate")}))
    assert "`attnet:mlp@x` (+0.050 in epoch 2: still improving)" in md


def test_curves_are_one_csv_per_model_and_stale_ones_go(tmp_path):
    (tmp_path / "gone.csv").write_text("epoch,val\n1,0.5\n")
    training.write_curves(RECORDS, tmp_path)
    names = sorted(f.name for f in tmp_path.iterdir())
    assert names == ["attnet_mlp_baseline.csv", "baseline.csv", "minimax.csv", "pgd-at.csv"]
    with open(tmp_path / "pgd-at.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["epoch", "val"], ["1", "0.9"], ["2", "0.8"], ["3", "0.7"], ["4", "0.6"]]


def test_the_figure_has_a_panel_per_group(tmp_path):
    assert training.plot_training(RECORDS, tmp_path / "t.png", pyplot(), save)
    assert (tmp_path / "t.png").stat().st_size > 1000
    assert not training.plot_training({}, tmp_path / "none.png", pyplot(), save)


def test_a_seed_table_collected_on_an_earlier_run_is_not_used():
    from advgame.report.study import stale_seeds

    cell = {"error": 0.2, "ci95": [0.1, 0.3], "n": 100}
    defenders = {"alt": {"results": {"pgd-curr": {"0.3": cell}}}}
    same = {"defenders": {"alt": {"pgd-curr": {"0.3": {"per_seed": [0.2, 0.25, 0.3]}}}}}
    assert stale_seeds(same, defenders) == [] and stale_seeds(None, defenders) == []
    other = {"defenders": {"alt": {"pgd-curr": {"0.3": {"per_seed": [0.4, 0.25, 0.3]}}},
                           "sens-off": {"pgd-curr": {"0.3": {"per_seed": [0.9]}}}}}  # no cell here: skipped
    assert stale_seeds(other, defenders) == ["`alt` pgd-curr at 0.3"]
    # a cell at Table 5's further etas is the table5 stage's (an attacker trained at that eta),
    # not the evaluation's eta sweep (the main eta's attacker): it is checked against that
    defenders["alt"]["results"]["attnet-curr:mlp"] = {"0.4": {**cell, "error": 0.7}}
    table5 = {"alt": {"attnet-curr:mlp": {"0.4": {**cell, "error": 0.85}}}}
    seeds_ = {"defenders": {"alt": {"attnet-curr:mlp": {"0.4": {"per_seed": [0.85, 0.8]}}}}}
    assert stale_seeds(seeds_, defenders, table5) == [] and stale_seeds(seeds_, defenders) != []


def test_every_attacker_network_is_grouped_with_the_attackers():
    # the study's (attnet:...) and the paper's own (attnet-paper:..., Table 5) alike
    attackers = "attacker networks"
    assert training.group_of("attnet:mlp@alt") == attackers
    assert training.group_of("attnet:unet@minimax:eta0.4") == attackers
    assert training.group_of("attnet-paper:mlp@sens-fgsm:eta0.3") == attackers
    assert training.group_of("trades") == "robust training"
