"""The attack table is the one list of attacks: every entry resolves, every list the evaluation,
config, sanity checks and report used to spell out is read from it, and a new attack added as
one entry shows up in the evaluation, the report's columns and the headline metrics."""
import dataclasses

import pytest
import torch

from advgame import attack_table, config
from advgame.attack_table import ATTACKS, THREATS, Attack
from advgame.attacks.target import Defender
from advgame.evaluation.crosseval import Plan, evaluate_defender
from advgame.report import exports
from advgame.report.study import Study
from advgame.report.tables import attack_rank, columns, rows


def test_every_entry_is_well_formed_and_its_function_resolves():
    assert len({a.name for a in ATTACKS}) == len(ATTACKS)
    plan_fields = {f.name for f in dataclasses.fields(Plan)}
    for a in ATTACKS:
        assert a.threat in THREATS and a.etas in ("sweep", "strong", "art"), a.name
        assert a.needs in ("", "rejects", "detector", "transfer", "strong", "art"), a.name
        assert a.family == bool(a.members) or a.run is None, a.name
        if a.members:
            assert a.members in plan_fields, a.name
        if a.run is not None:
            assert callable(a.runner()), a.name
    assert [a.headline[0] for a in attack_table.headline()] == list(range(len(attack_table.headline())))


def test_the_table_stays_torch_free():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(attack_table))
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in mods if m and (m.startswith("torch") or m.startswith("advgame"))}


def test_names_and_families_are_found():
    assert attack_table.find("fgsm-3") == (attack_table.get("fgsm-{}"), "3")
    assert attack_table.find("fgsm-curr")[0].name == "fgsm-curr"
    assert attack_table.find("attnet-curr:unet") == (attack_table.get("attnet-curr:{}"), "unet")
    assert attack_table.find("attnet-transfer:alt:mlp")[1] == "alt:mlp"
    assert attack_table.find("nothing") is None
    assert attack_table.matches("pgd-transfer:baseline", threat="transfer")
    assert not attack_table.matches("pgd-curr:grey-box", threat="white-box")
    assert config.STRONG_ATTACKS == ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
    assert attack_table.paper_columns("mlp") == [("fgsm-curr", "fgsm-curr", "FGSM-curr"),
                                                 ("attnet-curr", "attnet-curr:mlp", "AttNet-curr")]


def test_report_order_follows_the_table():
    order = ["worst-case", "square", "attnet-curr:conv", "fgsm-10", "clean", "fgsm-2", "attnet-curr:mlp",
             "pgd-curr", "apgd-ce", "fgsm-curr", "attnet-transfer:alt:mlp", "pgd-transfer:baseline"]
    assert sorted(order, key=attack_rank) == [
        "clean", "fgsm-2", "fgsm-10", "fgsm-curr", "pgd-curr", "attnet-curr:mlp", "attnet-curr:conv",
        "apgd-ce", "square", "pgd-transfer:baseline", "attnet-transfer:alt:mlp", "worst-case"]


def toy_run(c):
    """Every pixel pushed eta/2 towards the far end of [0, 1], then an eta/2 signed-gradient step of
    the defender's loss: fools the 2-epoch digit classifier by a wide margin on any CPU (the push
    alone fooled none of its 60 images with ATEN_CPU_CAPABILITY=default, some with AVX2 kernels)."""
    from advgame.attacks.fgsm import fgsm
    pushed = (c.x + c.eta / 2 * torch.sign(0.5 - c.x)).clamp(0, 1)
    return fgsm(c.defender.model, pushed, c.y, c.eta / 2, c.plan.batch, c.defender.attack_loss)


def test_a_new_attack_is_one_entry(monkeypatch, trained_smallcnn):
    """A toy attack added to a temporary table, with no other file touched: it runs in the
    evaluation (and counts in worst-case), is a column of the report's main table in its rank's
    place, and is a headline metric."""
    toy = Attack("toy", toy_run, "a test", "white-box", rank=5.5, seeded=False, headline=(4, "toy"))
    table = (*ATTACKS[:-1], toy, ATTACKS[-1])
    monkeypatch.setattr(attack_table, "ATTACKS", table)
    monkeypatch.setattr(attack_table, "BY_NAME", {a.name: a for a in table})
    model, x, y = trained_smallcnn
    x, y = x[:60], y[:60]
    plan = Plan(etas=[0.3], main_eta=0.3, pgd_steps=3, batch=100, strong_attacks=["apgd-ce"], apgd_iters=3,
                sanity_eta=0)
    out = evaluate_defender(Defender("m", model, model), x, y, plan)
    res = out["results"]
    # the cascade (apgd-ce) runs after every attack outside it, on what they left
    assert out["attacks_by_eta"]["0.3"] == ["fgsm-curr", "pgd-curr", "toy", "apgd-ce"]
    assert res["toy"]["0.3"]["error"] > res["clean"]["0"]["error"] + 0.2, res["toy"]["0.3"]
    assert res["worst-case"]["0.3"]["error"] >= res["toy"]["0.3"]["error"]
    cols = columns(rows({"m": out}), "0.3", lambda a: True)
    assert cols.index("apgd-ce") < cols.index("toy") < cols.index("worst-case")
    s = Study(params=config.parse({}), defenders={"m": {"defender": "m", **out}})
    assert exports.headline(s)["m"]["toy"] == round(res["toy"]["0.3"]["error"], 4)
    assert list(exports.headline(s)["m"]) == ["clean", "worst_case", "pgd_curr", "toy"]


def test_an_unknown_strong_attack_names_the_table(trained_smallcnn):
    model, x, y = trained_smallcnn
    with pytest.raises(ValueError, match="allowed: apgd-ce, apgd-dlr, apgd-t, fab-t, square"):
        evaluate_defender(Defender("m", model, model), x[:4], y[:4], Plan(etas=[0.3], main_eta=0.3,
                                                                           strong_attacks=["fab"]))
