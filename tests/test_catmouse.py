import torch
import torch.nn.functional as F
from torch import nn

from advgame.attacks.fgsm import fgsm
from advgame.config import CatMouseParams
from advgame.defenses.catmouse import (
    attack_matrix,
    play_round,
    round_loss,
    round_objective,
    write_curve_csv,
)
from advgame.models import SmallCNN
from advgame.report.catmouse_figures import plot_curve, plot_matrix
from advgame.training import error_rate

ETA = 0.3


def _toy_batch(n=8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 28, 28, generator=g)
    z = (x + 0.3 * torch.randn(x.shape, generator=g).sign()).clamp(0, 1)
    return x, z, torch.randint(0, 10, (n,), generator=g)


def test_round_loss_endpoints_are_exact():
    torch.manual_seed(0)
    m = SmallCNN()
    x, z, y = _toy_batch()
    assert torch.equal(round_loss(m, x, z, y, 0.0), F.cross_entropy(m(x), y))
    assert torch.equal(round_loss(m, x, z, y, 1.0), F.cross_entropy(m(z), y))
    mix = 0.75 * F.cross_entropy(m(x), y) + 0.25 * F.cross_entropy(m(z), y)
    assert torch.allclose(round_loss(m, x, z, y, 0.25), mix)


def test_round_objective_reads_the_stacked_pair():
    torch.manual_seed(0)
    m = SmallCNN()
    x, z, y = _toy_batch()
    pair = torch.stack([x, z], dim=1)
    assert torch.equal(round_objective(1.0)(m, pair, y), F.cross_entropy(m(z), y))
    assert torch.equal(round_objective(0.0)(m, pair, y), F.cross_entropy(m(x), y))


def _round(trained_smallcnn, tiny_mnist):
    prev, xt, yt = trained_smallcnn
    x, y = tiny_mnist[0], tiny_mnist[1]
    before = {k: v.clone() for k, v in prev.state_dict().items()}
    cfg = CatMouseParams(epochs=2, batch=64, lr=1e-3, a=0.5)
    model, metrics, z_test, _ = play_round(prev, x, y, xt, yt, ETA, cfg)
    assert all(torch.equal(before[k], v) for k, v in prev.state_dict().items()), "u_(k-1) was modified"
    return prev, model, metrics, z_test, xt, yt


def test_round_hardens_against_its_own_attack_and_stays_open_to_the_next(trained_smallcnn, tiny_mnist):
    prev, model, metrics, z_test, xt, yt = _round(trained_smallcnn, tiny_mnist)
    # FGSM-k test examples are the ones made against u_(k-1), not against u_k
    assert torch.equal(z_test, fgsm(prev, xt, yt, ETA))
    assert metrics["own_attack"] == error_rate(model, z_test, yt)
    assert metrics["next_attack"] == error_rate(model, fgsm(model, xt, yt, ETA), yt)
    assert metrics["clean"] == error_rate(model, xt, yt)
    prev_own = error_rate(prev, z_test, yt)
    assert prev_own > 0.5                                   # FGSM-k fools u_(k-1) (white-box)
    assert metrics["own_attack"] < prev_own - 0.25          # ... but not u_k, trained on it
    assert metrics["own_attack"] < metrics["next_attack"]  # fails if own and next were swapped
    assert metrics["clean"] < 0.3


def test_attack_matrix_toy():
    class Const0(nn.Module):
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 3).float()

    yt = torch.tensor([0, 1, 2, 0])
    onehot = lambda c: F.one_hot(torch.tensor(c), 3).float()  # noqa: E731
    attacks = {1: onehot([0, 1, 2, 0]), 2: onehot([0, 1, 0, 1]), 3: onehot([1, 2, 0, 1])}
    err = attack_matrix({0: nn.Identity(), 5: Const0()}, attacks, yt)
    assert err == [[0.0, 0.5, 1.0], [0.5, 0.5, 0.5]]


def test_outputs_written(tmp_path):
    rows = [{"k": k, "clean": 0.02, "own_attack": 0.05 + 0.01 * k, "next_attack": 0.9 - 0.05 * k}
            for k in (1, 2, 3)]
    plot_curve(rows, tmp_path / "curve.png")
    plot_matrix([[0.9, 0.1], [0.2, 0.8]], ["u_0", "u_1"], ["fgsm-1", "fgsm-2"], tmp_path / "m.png")
    write_curve_csv(rows, tmp_path / "curve.csv")
    for f in ("curve.png", "m.png"):
        data = (tmp_path / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0] == "k,clean,own_attack,next_attack" and lines[1].startswith("1,0.02,0.06")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
