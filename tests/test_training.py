"""training.fit's early stop on the validation split and the record every stage reports."""
import torch
from torch import nn

from advgame.config import TrainParams
from advgame.training import fit, standard_objective, training_record


def problem(n=64):
    gen = torch.Generator().manual_seed(0)
    return nn.Linear(4, 3), torch.rand(n, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def scripted(model, values):
    """A validation criterion that returns `values` in turn and keeps each epoch's weights."""
    seen, it = [], iter(values)

    def validate():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(it)
    return validate, seen


def test_a_plateau_stops_training_and_keeps_the_best_epoch():
    model, x, y = problem()
    validate, seen = scripted(model, [0.5, 0.3, 0.3, 0.4, 0.1, 0.1])
    cfg = TrainParams(epochs=6, patience=2, batch=16, lr=0.1)
    hist = fit(model, x, y, standard_objective, cfg, validate=validate)
    assert [h["val"] for h in hist] == [0.5, 0.3, 0.3, 0.4]  # two epochs without a gain: stop
    assert [h.get("early_stop", False) for h in hist] == [False, False, False, True]
    assert all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())  # epoch 2's weights
    assert not torch.equal(seen[1]["weight"], seen[3]["weight"])  # (training did move them)
    r = training_record(hist, cfg.epochs, "clean error")
    assert (r["epochs"], r["best_epoch"], r["capped"], r["val"]) == (4, 2, False, 0.3)
    assert r["curve"] == [0.5, 0.3, 0.3, 0.4] and r["cap"] == 6


def test_a_model_still_improving_at_the_cap_is_reported_capped():
    model, x, y = problem()
    validate, _ = scripted(model, [0.5, 0.4, 0.3])
    cfg = TrainParams(epochs=3, patience=2, batch=16)
    hist = fit(model, x, y, standard_objective, cfg, validate=validate)
    r = training_record(hist, cfg.epochs, "clean error")
    assert (r["epochs"], r["best_epoch"], r["capped"]) == (3, 3, True)


def test_gains_under_min_gain_stop_training_but_the_best_epoch_is_kept():
    """A criterion that creeps down forever (MagNet's reconstruction error) stops once patience
    epochs gain less than min_gain of the last gain's value, and still ends at its lowest value."""
    model, x, y = problem()
    validate, seen = scripted(model, [0.5, 0.4, 0.39, 0.385, 0.38, 0.375])
    cfg = TrainParams(epochs=6, patience=2, min_gain=0.1, batch=16, lr=0.1)
    hist = fit(model, x, y, standard_objective, cfg, validate=validate)
    assert [h["val"] for h in hist] == [0.5, 0.4, 0.39, 0.385]  # 0.39 and 0.385 are < 10 % below 0.4
    assert all(torch.equal(v, seen[3][k]) for k, v in model.state_dict().items())  # the lowest, epoch 4
    r = training_record(hist, cfg.epochs, "reconstruction L1")
    assert (r["epochs"], r["best_epoch"], r["capped"]) == (4, 4, False)
    # min_gain 0: every new best is a gain, so the same curve runs to the cap
    model, x, y = problem()
    validate, _ = scripted(model, [0.5, 0.4, 0.39, 0.385, 0.38, 0.375])
    hist = fit(model, x, y, standard_objective, cfg.model_copy(update={"min_gain": 0.0}), validate=validate)
    assert training_record(hist, 6, "reconstruction L1")["capped"] and len(hist) == 6


def test_ties_are_broken_by_the_second_criterion_and_then_by_the_earlier_epoch():
    model, x, y = problem()
    validate, seen = scripted(model, [(0.5, 0.3), (0.5, 0.2), (0.5, 0.2), (0.6, 0.0)])
    cfg = TrainParams(epochs=4, patience=2, batch=16, lr=0.1)
    hist = fit(model, x, y, standard_objective, cfg, validate=validate)
    assert len(hist) == 4
    assert all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())
    assert training_record(hist, 4, "PGD-20 error")["best_epoch"] == 2


def test_an_attacker_record_counts_up_and_its_own_stop():
    hist = [{"val": 0.5, "early_stop": False}, {"val": 0.7, "early_stop": False},
            {"val": 0.7, "early_stop": True}]
    r = training_record(hist, 3, "fooling rate", higher_is_better=True)
    assert (r["best_epoch"], r["val"], r["capped"]) == (2, 0.7, False)
    hist[-1]["early_stop"] = False
    assert training_record(hist, 3, "fooling rate", higher_is_better=True)["capped"]


def test_without_validation_fit_runs_every_epoch():
    model, x, y = problem()
    assert len(fit(model, x, y, standard_objective, TrainParams(epochs=3, batch=16))) == 3


def test_a_loop_without_a_stop_keeps_its_last_epoch_at_the_cap():
    hist = [{"val": 0.3}, {"val": 0.1}, {"val": 0.2}]  # the game: the best value is not the model kept
    r = training_record(hist, 3, "error vs the co-trained attacker", keep_last=True)
    assert (r["epochs"], r["best_epoch"], r["val"], r["capped"]) == (3, 3, 0.2, True)
    assert not training_record(hist, 5, "x", keep_last=True)["capped"]
