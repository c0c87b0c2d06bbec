"""The alt / minimax / maximin game (src/advgame/defenses/game.py) and the game and attackers stages."""
import argparse
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from advgame import UserError
from advgame.artifacts import load_checkpoint, save_checkpoint, save_torch
from advgame.config import GameParams
from advgame.defenses.game import (
    curve_rows,
    defender_objective,
    exploitability_probe,
    game_value,
    maximin_attacker_objective,
    minimax_defender_objective,
    play,
    probe_epochs,
    sq_grad_norm,
)
from advgame.defenses.loading import load_defender
from advgame.models import SmallCNN, classifier_meta, model_from_checkpoint
from advgame.pipeline.stage import run_stage
from advgame.training import TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
ETA = 0.1


def tiny_players(dtype=torch.float32, seed=0):
    """A linear classifier and a smooth two-layer attacker on 1x4x4 images."""
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).to(dtype)
    h = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 16),
                      nn.Unflatten(1, (1, 4, 4))).to(dtype)
    return g, h


def tiny_data(n=6, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    # pixels in [0.3, 0.7] and eta 0.1 keep the clip inactive, so everything is smooth
    x = (0.3 + 0.4 * torch.rand(n, 1, 4, 4, generator=gen)).to(dtype)
    return x, torch.randint(0, 3, (n,), generator=gen)


def fd_grad(fn, params, eps=1e-6):
    """Central finite differences of the scalar fn() wrt every entry of params."""
    out = []
    for p in params:
        g = torch.zeros_like(p)
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            hi = float(fn().detach())
            flat[i] = old - eps
            lo = float(fn().detach())
            flat[i] = old
            gflat[i] = (hi - lo) / (2 * eps)
        out.append(g)
    return out


def assert_close(a, b, tol=1e-6):
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, rtol=tol, atol=tol)


def sq(grads):
    return sum(float(g.pow(2).sum()) for g in grads)


def test_minimax_penalty_value_and_gradient_match_finite_differences():
    g, h = tiny_players(torch.float64)
    x, y = tiny_data(dtype=torch.float64)
    u, v = list(g.parameters()), list(h.parameters())
    c, gamma = 0.3, 2.0

    # the penalty is gamma/2 ||grad_v f||^2 of the adversarial term
    fd_v = fd_grad(lambda: game_value(g, h, x, y, ETA), v)
    plain = defender_objective(g, h, x, y, ETA, c)
    penalised = minimax_defender_objective(g, h, x, y, ETA, c, gamma)
    assert float((penalised - plain).detach()) == pytest.approx((1 - c) * gamma / 2 * sq(fd_v), rel=1e-6)

    # and its gradient wrt u goes through grad_v f (double backprop)
    auto = torch.autograd.grad(minimax_defender_objective(g, h, x, y, ETA, c, gamma), u)
    assert_close(auto, fd_grad(lambda: minimax_defender_objective(g, h, x, y, ETA, c, gamma), u))
    # it differs from the unpenalised gradient, so the check above is not vacuous
    plain_grad = torch.autograd.grad(defender_objective(g, h, x, y, ETA, c), u)
    assert not torch.allclose(auto[0], plain_grad[0], atol=1e-4)


def test_maximin_penalty_value_and_gradient_match_finite_differences():
    g, h = tiny_players(torch.float64)
    x, y = tiny_data(dtype=torch.float64)
    u, v = list(g.parameters()), list(h.parameters())
    gamma = 2.0

    fd_u = fd_grad(lambda: game_value(g, h, x, y, ETA), u)
    obj = maximin_attacker_objective(g, h, x, y, ETA, gamma)
    f = float(game_value(g, h, x, y, ETA).detach())
    assert float(obj.detach()) == pytest.approx(f - gamma / 2 * sq(fd_u), rel=1e-6)

    auto = torch.autograd.grad(maximin_attacker_objective(g, h, x, y, ETA, gamma), v)
    assert_close(auto, fd_grad(lambda: maximin_attacker_objective(g, h, x, y, ETA, gamma), v))
    plain_grad = torch.autograd.grad(game_value(g, h, x, y, ETA), v)
    assert not torch.allclose(auto[2], plain_grad[2], atol=1e-4)


def test_sq_grad_norm_is_differentiable():
    w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    s = sq_grad_norm((w ** 3).sum(), [w])  # sum (3 w^2)^2 = 9 sum w^4
    assert float(s.detach()) == pytest.approx(9 * (1 + 16))
    (d,) = torch.autograd.grad(s, w)
    torch.testing.assert_close(d, 36 * w.detach() ** 3)


def _play(mode, gamma, k=2, epochs=2):
    g, h = tiny_players()
    x, y = tiny_data(n=40)
    cfg = GameParams(epochs=epochs, batch=8, k=k, gamma=gamma, gamma_maximin=gamma, lr=1e-2, lr_attacker=1e-2, seed=3)
    hist = play(mode, g, h, x, y, cfg, ETA, xt=x, yt=y)
    return g, h, hist


def test_minimax_reports_how_much_its_penalty_weighs():
    _, _, hist = _play("minimax", 5.0)
    g, h = tiny_players()
    x, y = tiny_data(n=8)
    parts = {}
    minimax_defender_objective(g, h, x, y, ETA, 0.5, 5.0, parts)
    f = float(game_value(g, h, x, y, ETA).detach())
    assert parts["f"] == pytest.approx(f)
    assert parts["penalty"] == pytest.approx(2.5 * float(sq_grad_norm(game_value(g, h, x, y, ETA), list(h.parameters()))))
    assert all(r["penalty_ratio"] > 0 for r in hist)


def test_minimax_with_gamma_zero_is_exactly_alt():
    ga, ha, hist_a = _play("alt", 0.0)
    gm, hm, hist_m = _play("minimax", 0.0)
    for a, b in zip([*ga.parameters(), *ha.parameters()], [*gm.parameters(), *hm.parameters()]):
        assert torch.equal(a, b)
    # same play; minimax also reports its (here zero) penalty
    assert [{k: v for k, v in h.items() if k not in ("penalty", "penalty_ratio")} for h in hist_m] == hist_a
    assert all(h["penalty"] == 0.0 and h["penalty_ratio"] == 0.0 for h in hist_m)
    # the penalty does change the play when gamma > 0
    gp, _, _ = _play("minimax", 5.0)
    assert not torch.equal(next(gp.parameters()), next(ga.parameters()))


def test_maximin_with_gamma_zero_is_exactly_alt():
    ga, ha, _ = _play("alt", 0.0)
    gm, hm, _ = _play("maximin", 0.0)
    for a, b in zip([*ga.parameters(), *ha.parameters()], [*gm.parameters(), *hm.parameters()]):
        assert torch.equal(a, b)


def test_play_logs_both_players_per_epoch():
    logged = []
    g, h = tiny_players()
    x, y = tiny_data(n=16)
    play("minimax", g, h, x, y, GameParams(epochs=3, batch=8), ETA, log=lambda m, s: logged.append(s),
         xt=x, yt=y)
    assert logged == [0, 1, 2]
    _, _, hist = _play("maximin", 1.0, epochs=1)
    assert set(hist[0]) == {"defender_loss", "attacker_objective", "clean_test_error", "attnet_test_error"}


def test_alt_attacker_ascends_and_defender_descends():
    """One alt minibatch: the attacker's step raises f, the defender's step lowers its loss."""
    g, h = tiny_players()
    x, y = tiny_data(n=8)
    f0 = float(game_value(g, h, x, y, ETA).detach())
    cfg = GameParams(epochs=1, batch=8, k=1, lr=1e-2, lr_attacker=1e-2, clean_weight=0.0)
    g2, h2 = tiny_players()
    # attacker alone: the defender's learning rate is negligible
    play("alt", g2, h2, x, y, cfg.model_copy(update={"lr": 1e-12}), ETA)
    assert float(game_value(g2, h2, x, y, ETA).detach()) > f0
    # defender alone: the attacker's learning rate is negligible
    play("alt", g, h, x, y, cfg.model_copy(update={"lr_attacker": 1e-12}), ETA)
    assert float(game_value(g, h, x, y, ETA).detach()) < f0


def test_unknown_mode_is_a_user_error():
    g, h = tiny_players()
    x, y = tiny_data()
    with pytest.raises(UserError, match="allowed values: alt, minimax, maximin"):
        play("minmax", g, h, x, y, GameParams(epochs=1), ETA)


def test_nan_input_stops_the_game():
    g, h = tiny_players()
    x, y = tiny_data(n=16)
    x[3, 0, 1, 1] = float("nan")
    for mode in ("alt", "minimax", "maximin"):
        with pytest.raises(TrainingDiverged, match="nothing was saved"):
            play(mode, g, h, x, y, GameParams(epochs=1, batch=8), ETA)


def test_loss_above_max_loss_stops_the_game():
    g, h = tiny_players()
    x, y = tiny_data(n=16)
    with pytest.raises(TrainingDiverged, match="diverged"):
        play("alt", g, h, x, y, GameParams(epochs=1, batch=8, max_loss=1e-3, k=1,
                                           lr_attacker=1e-12), ETA)


def test_the_probe_runs_at_evenly_spaced_epochs_ending_at_the_last():
    assert probe_epochs(5) == [1, 2, 3, 4, 5]
    assert probe_epochs(20) == [4, 8, 12, 16, 20]
    assert probe_epochs(12) == [3, 5, 8, 10, 12]
    assert probe_epochs(3) == [1, 2, 3]
    assert probe_epochs(7, points=2) == [4, 7]


def test_the_curve_rows_fill_the_epochs_the_probe_skipped():
    rows = curve_rows([{"val": 0.5}, {"val": 0.4, "exploitability": 0.1}])
    assert rows == [{"epoch": 1, "val": 0.5, "exploitability": ""},
                    {"epoch": 2, "val": 0.4, "exploitability": 0.1}]


def test_the_probe_measures_the_game_without_changing_it():
    """A probe that draws from and reseeds the global random stream and leaves both players in
    eval mode: with a dropout defender (the global stream matters), the game with it ends with the
    same players as the game without it, and the probed epochs alone carry its metrics."""
    def players():
        g, h = tiny_players()
        return nn.Sequential(nn.Dropout(0.3), *g), h

    def probe(defender, attacker):
        torch.rand(100)
        torch.manual_seed(123)
        return {"exploitability": float(defender.training) + float(attacker.training)}

    x, y = tiny_data(n=16)
    cfg = GameParams(epochs=8, batch=8)
    runs = []
    for p in (None, probe):
        torch.manual_seed(5)
        g, h = players()
        runs.append((g, h, play("minimax", g, h, x, y, cfg, ETA, probe=p)))
    (g0, h0, hist0), (g1, h1, hist1) = runs
    for a, b in zip([*g0.parameters(), *h0.parameters()], [*g1.parameters(), *h1.parameters()]):
        assert torch.equal(a, b)
    assert [e + 1 for e, r in enumerate(hist1) if "exploitability" in r] == probe_epochs(8) == [2, 4, 5, 7, 8]
    assert all(r["exploitability"] == 0.0 for r in hist1 if "exploitability" in r)  # probed in eval mode
    assert not any("exploitability" in r for r in hist0)


class _Still(nn.Module):
    """An attacker that does nothing: h = 0, so z = x with the tanh form."""
    param = "tanh"

    def forward(self, x):
        return torch.zeros_like(x)


def test_the_probe_is_a_fresh_attackers_validation_error_minus_the_co_trained_ones(trained_smallcnn, tiny_mnist):
    from advgame.config import AttackerParams
    from advgame.training import error_rate

    m, xv, yv = trained_smallcnn
    x, y, _, _ = tiny_mnist
    cfg = AttackerParams(hidden=32, epochs=2, batch=32, warmup_epochs=1)
    probe = exploitability_probe(x[:200], y[:200], (xv[:100], yv[:100]), "mlp", cfg, 0.3)
    out = probe(m, _Still())
    # the attacker that does nothing fools exactly the clean errors; a fresh one fools more
    assert out["probe_cotrained_error"] == error_rate(m, xv[:100], yv[:100])
    assert out["exploitability"] == out["probe_fresh_error"] - out["probe_cotrained_error"] > 0.1
    assert 1 <= out["probe_attacker_epochs"] <= 2


# ---------------------------------------------------------------- the stage scripts

def _stage(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_mnist):
    """A project directory with 64 training digits, 32 validation and 32 test digits and a
    baseline checkpoint."""
    x, y, xt, yt = tiny_mnist
    save_torch({"x": x[:64], "y": y[:64]}, tmp_path / "data/prepared/train.pt")
    save_torch({"x": x[64:96], "y": y[64:96]}, tmp_path / "data/prepared/val.pt")
    save_torch({"x": xt[:32], "y": yt[:32]}, tmp_path / "data/prepared/test.pt")
    torch.manual_seed(0)
    save_checkpoint(SmallCNN(), classifier_meta("smallcnn", x.shape, 10, defender="baseline"),
                    tmp_path / "models/baseline.pt")
    params = (ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(params)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _game_args(mode):
    return argparse.Namespace(mode=mode, data="data/prepared", base="models/baseline.pt", out=f"models/{mode}.pt",
                              out_attacker=f"models/{mode}-attacker.pt", out_curve=f"reports/game/{mode}.csv")


def _attackers_args(name):
    return argparse.Namespace(defender=name, data="data/prepared", model=f"models/{name}.pt",
                              out=f"models/attackers/{name}")


def _set(path, section, **values):
    p = yaml.safe_load(path.read_text())
    p[section].update(values)
    path.write_text(yaml.safe_dump(p))


def test_game_stage_saves_both_players(workdir):
    _set(workdir / "params.yaml", "game", epochs=1, batch=32)
    _set(workdir / "params.yaml", "attacker", hidden=16)
    mod = _stage("game")
    run_stage("alt", lambda ctx: mod.body(ctx, _game_args("alt")), sections=["run", "attack", "attacker", "game"])
    d = load_defender("alt", "models/alt.pt")
    assert d.meta["defender"] == "alt"
    att = load_checkpoint("models/alt-attacker.pt")
    assert att["meta"]["arch"] == "mlp" and att["meta"]["eta"] == 0.3
    model_from_checkpoint(att)
    rep = json.loads(Path("reports/stages/alt.json").read_text())
    assert {"clean_error", "own_attnet_error"} <= set(rep)
    record = rep["training"]["alt"]  # the game has no early stop: every epoch ran, at the cap
    assert record["epochs"] == 1 and record["capped"] and len(record["curve"]) == 1
    curve = Path("reports/game/alt.csv").read_text().splitlines()
    assert "exploitability" in curve[0].split(",") and len(curve) == 2  # the probe at the last epoch


def test_game_stage_saves_nothing_when_it_diverges(workdir):
    _set(workdir / "params.yaml", "game", epochs=1, batch=32, max_loss=1e-3)
    mod = _stage("game")
    with pytest.raises(SystemExit) as e:
        run_stage("minimax", lambda ctx: mod.body(ctx, _game_args("minimax")),
                  sections=["run", "attack", "attacker", "game"])
    assert e.value.code == 2
    assert not Path("models/minimax.pt").exists() and not Path("models/minimax-attacker.pt").exists()


def test_attackers_stage_trains_one_attacker_per_arch(workdir):
    _set(workdir / "params.yaml", "attacker", epochs=1, batch=32, hidden=16, width=4)
    mod = _stage("attackers")
    run_stage("attackers-baseline", lambda ctx: mod.body(ctx, _attackers_args("baseline")),
              sections=["run", "attack", "attacker"])
    rep = json.loads(Path("reports/stages/attackers-baseline.json").read_text())
    for arch in ("mlp", "conv", "unet"):
        ck = load_checkpoint(f"models/attackers/baseline/{arch}.pt")
        assert ck["meta"]["defender"] == "baseline" and ck["meta"]["arch"] == arch
        assert model_from_checkpoint(ck).param == ck["meta"]["param"] == "box"
        assert 0 <= rep[f"attnet_{arch}_test_error"] <= 1
        assert {f"attnet_{arch}_{k}" for k in ("pert_std", "saturated", "epochs")} <= set(rep)
        assert f"attnet_{arch}_seconds" in json.loads(Path("reports/timing/attackers-baseline.json").read_text())


def test_attackers_stage_saves_nothing_when_it_diverges(workdir):
    ck = torch.load("models/baseline.pt", weights_only=True)
    ck["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in ck["state_dict"].items()}
    save_torch(ck, "models/baseline.pt")
    _set(workdir / "params.yaml", "attacker", epochs=1, batch=32, hidden=16, width=4)
    mod = _stage("attackers")
    with pytest.raises(SystemExit):
        run_stage("attackers-baseline", lambda ctx: mod.body(ctx, _attackers_args("baseline")),
                  sections=["run", "attack", "attacker"])
    assert not Path("models/attackers").exists()
