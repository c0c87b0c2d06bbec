"""AttNet-curr training (src/advgame/attacker.py) and the attacker example z (attacks.py)."""
import pytest
import torch
from torch import nn

from advgame.artifacts import load_checkpoint, save_checkpoint
from advgame.attacks.attnet import PARAMS, attnet, attnet_example
from advgame.attacks.attnet_training import attack_objective, margin, train_attacker
from advgame.attacks.core import ce_loss
from advgame.config import AttackerParams
from advgame.models import attacker_meta, build_attacker, model_from_checkpoint
from advgame.training import TrainingDiverged, error_rate, training_record

ETA = 0.1


def tiny_problem(n=32, seed=1):
    """A linear 3-class defender on 1x4x4 images."""
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(seed)
    return g, torch.rand(n, 1, 4, 4, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def tiny_cfg(**kw):
    return AttackerParams(**{"hidden": 8, "batch": 8, "warmup_epochs": 0, **kw})


def held(x, y, n=8):
    """(training images, validation split): the last n held out, as data.prepare holds out val."""
    return x[:-n], y[:-n], (x[-n:], y[-n:])


def test_penalty_keeps_the_preactivation_bounded():
    # cross-entropy never saturates on a linear defender: without the remedy h grows without bound
    g, x, y = tiny_problem(n=136)
    cfg = tiny_cfg(loss="ce", lr=0.05, epochs=6, patience=6, tol=0.0, h_bound=1.0)
    xtr, ytr, val = held(x, y)
    _, free = train_attacker(g, ce_loss, xtr, ytr, "mlp", cfg.model_copy(update={"penalty": 0.0}), ETA,
                             (1, 4, 4), val=val)
    _, kept = train_attacker(g, ce_loss, xtr, ytr, "mlp", cfg.model_copy(update={"penalty": 10.0}), ETA,
                             (1, 4, 4), val=val)
    assert len(free) == len(kept) == 6
    assert kept[-1]["mean_abs_h"] < 1.5 < 3 < free[-1]["mean_abs_h"], (kept[-1], free[-1])
    assert kept[-1]["saturated"] == 0


def test_trained_attacker_beats_random_signs(trained_smallcnn, tiny_mnist):
    model, xe, ye = trained_smallcnn
    x, y = tiny_mnist[0], tiny_mnist[1]
    eta = 0.3
    before = [p.detach().clone() for p in model.parameters()]
    cfg = AttackerParams(hidden=64, epochs=2)
    xtr, ytr, val = held(x, y, 100)
    att, hist = train_attacker(model, ce_loss, xtr, ytr, "mlp", cfg, eta, x.shape[1:], val=val)
    err = error_rate(model, attnet(att, xe, eta), ye)
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, xe.shape, generator=gen).float() * 2 - 1
    noise_err = error_rate(model, (xe + eta * signs).clamp(0, 1), ye)
    assert err > noise_err + 0.2, (err, noise_err, hist)
    # the defender was frozen: untouched and its gradient flags restored
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    assert {"val", "early_stop", "mean_abs_h", "saturated", "pert_std", "seconds"} <= set(hist[0])


def test_margin_objective_keeps_a_defenders_extra_term():
    g, x, y = tiny_problem(n=8)
    cfg = tiny_cfg(kappa=0.5)

    def with_penalty(m, z, t):  # like MagNet's: cross-entropy minus a detector penalty
        return ce_loss(m, z, t) - z.mean((1, 2, 3))

    plain = attack_objective(g, ce_loss, x, y, cfg)
    assert torch.equal(plain, margin(g(x), y, 0.5)) and plain.max() <= 0.5
    assert torch.allclose(attack_objective(g, with_penalty, x, y, cfg), plain - x.mean((1, 2, 3)), atol=1e-6)


def test_training_stops_when_heldout_success_stalls():
    g, x, y = tiny_problem()
    # no gain can reach this tolerance: the first epoch without one stops training
    xtr, ytr, val = held(x, y)
    _, hist = train_attacker(g, ce_loss, xtr, ytr, "mlp", tiny_cfg(epochs=5, tol=2.0), ETA, (1, 4, 4), val=val)
    assert len(hist) == 1 and hist[0]["early_stop"]
    record = training_record(hist, 5, "fooling rate", higher_is_better=True)
    assert record["epochs"] == 1 and not record["capped"]


def test_nan_input_stops_the_attacker():
    g, x, y = tiny_problem()
    x[3, 0, 1, 1] = float("nan")
    with pytest.raises(TrainingDiverged, match="diverged"):
        train_attacker(g, ce_loss, x[:-1], y[:-1], "mlp", tiny_cfg(epochs=1), ETA, (1, 4, 4), val=(x[-1:], y[-1:]))


@pytest.mark.parametrize("param", PARAMS)
@pytest.mark.parametrize("arch", ["mlp", "conv", "unet"])
def test_example_stays_in_budget_and_range(arch, param):
    torch.manual_seed(0)
    att = build_attacker(arch, (1, 8, 8), hidden=8, width=2, param=param)
    with torch.no_grad():  # a huge h: saturated everywhere, both signs
        for p in att.parameters():
            p.mul_(100)
    x = torch.rand(16, 1, 8, 8)
    x[:, :, 0], x[:, :, 1] = 0.0, 1.0  # pixels on both edges of the range
    z = attnet_example(att, x, 0.3)
    assert (z - x).abs().max() <= 0.3 + 1e-6 and z.min() >= 0 and z.max() <= 1


@pytest.mark.parametrize("param", PARAMS)
def test_checkpoint_replays_the_trained_parameterisation(tmp_path, param):
    torch.manual_seed(0)
    att = build_attacker("conv", (1, 8, 8), width=2, param=param)
    save_checkpoint(att, attacker_meta("conv", (1, 8, 8), 300, 2, param), tmp_path / "a.pt")
    back = model_from_checkpoint(load_checkpoint(tmp_path / "a.pt"))
    x = torch.rand(4, 1, 8, 8)
    assert back.param == param
    assert torch.equal(attnet(back, x, 0.3), attnet(att, x, 0.3))


def test_old_checkpoint_without_param_is_tanh(tmp_path):
    att = build_attacker("mlp", (1, 4, 4), hidden=4)
    meta = attacker_meta("mlp", (1, 4, 4), 4, 32)
    del meta["param"]
    save_checkpoint(att, meta, tmp_path / "old.pt")
    assert model_from_checkpoint(load_checkpoint(tmp_path / "old.pt")).param == "tanh"
