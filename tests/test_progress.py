"""Progress output: a plain line with count, total and ETA when stderr is not a terminal, the
items of the loop unchanged, and fit's numbers identical with and without a log line."""
import io

import torch

from advgame import progress as prog
from advgame.config import TrainParams
from advgame.training import fit, progress, standard_objective


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_plain_lines_carry_count_total_and_eta(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(prog.time, "monotonic", clock)
    monkeypatch.setattr(prog, "_last_line", clock.t)
    out = io.StringIO()  # not a terminal: no bar
    p = prog.Progress(range(10), "train", stream=out, every=5)
    seen = []
    for i in p:
        seen.append(i)
        clock.t += 2.0  # each item takes 2 s: a line at 6 s (3 items), 12 s (6), 18 s (9)
    assert seen == list(range(10))
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 3/10 (30%) 6.0s elapsed, ETA 14.0s"
    assert len(lines) == 3 and lines[-1].startswith("train: 9/10 (90%) 18.0s elapsed, ETA 2.0s")


def test_no_line_for_a_short_loop_and_the_clock_is_shared(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(prog.time, "monotonic", clock)
    monkeypatch.setattr(prog, "_last_line", clock.t)
    out = io.StringIO()
    for _ in prog.Progress(range(3), "short", stream=out, every=5):
        clock.t += 1.0
    assert out.getvalue() == ""
    # a second short loop continues the process's clock: 3 s + 3 s passes the 5 s mark
    for _ in prog.Progress(range(3), "epoch 2/2", stream=out, every=5):
        clock.t += 1.0
    assert out.getvalue().splitlines() == ["epoch 2/2: 2/3 (67%) 2.0s elapsed, ETA 1.0s"]


def test_unknown_total_and_postfix(monkeypatch):
    out = io.StringIO()
    p = prog.Progress(desc="eval baseline", stream=out, every=0)
    p.set_postfix_str("eta 0.3: pgd-curr")
    assert out.getvalue().startswith("eval baseline: 0 ") and "eta 0.3: pgd-curr" in out.getvalue()
    assert "ETA" not in out.getvalue()


def test_training_progress_keeps_its_name_and_items():
    p = progress(iter([1, 2, 3]), "x", total=3)
    assert isinstance(p, prog.Progress) and list(p) == [1, 2, 3] and p.total == 3


def _train(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    hist = fit(model, x, y, standard_objective, TrainParams(epochs=2, batch=8, lr=0.01))
    return hist, [p.detach().clone() for p in model.parameters()]


def test_fit_numbers_do_not_depend_on_progress_lines(monkeypatch, capsys):
    monkeypatch.setenv("ADVGAME_PROGRESS_EVERY", "1000")
    quiet = _train()
    monkeypatch.setenv("ADVGAME_PROGRESS_EVERY", "0")  # a line on every batch
    loud = _train()
    err = capsys.readouterr().err
    assert "train: 10/10 (100%)" in err and "epoch 2/2" in err and "ETA" in err
    assert quiet[0] == loud[0]
    assert all(torch.equal(a, b) for a, b in zip(quiet[1], loud[1]))
