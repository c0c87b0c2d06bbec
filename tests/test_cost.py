"""The cost table: the pass counter (advgame.passes) counts what a network really ran, the floor
and the table's arithmetic (advgame.pipeline.cost), and the stage clocks it reads."""
import json
import time

import pytest
import torch

from advgame import config, models, passes
from advgame.defenses.magnet import Reformer
from advgame.pipeline import cost


def test_forward_and_backward_passes_are_counted_per_network():
    net, att = models.build_classifier("smallcnn"), models.build_attacker("mlp", (1, 28, 28), hidden=16)
    x = torch.rand(7, 1, 28, 28)
    with passes.counting() as c:
        with torch.no_grad():
            net(x)                                  # 7 forward
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(net(xi).sum(), xi)      # 7 forward + backward
        net(x[:3])                                  # 3 forward, its graph never used
        att(x).sum().backward()                     # the attacker: 7 forward + backward
    got = c.snapshot()
    assert got["smallcnn"] == {"shape": [1, 28, 28], "fwd": 17, "bwd": 7, "calls": 3}
    assert got["mlp"] == {"shape": [1, 28, 28], "fwd": 7, "bwd": 7, "calls": 1}
    net(x)
    assert c.snapshot() == got  # nothing is counted outside the block


def test_a_network_inside_a_wrapper_counts_once_and_a_traced_copy_counts_as_its_networks():
    ae, net = Reformer(1), models.build_classifier("smallcnn")
    defended = torch.nn.Sequential(ae, net).eval()  # MagNet's reformer + classifier
    x = torch.rand(4, 1, 28, 28)
    fast = models.inference_copy(defended, x)
    assert fast is not None
    with passes.counting() as c, torch.no_grad():
        defended(x)
        fast(x[:2])
    got = c.snapshot()
    assert got["smallcnn"]["fwd"] == 6 and got["reformer"]["fwd"] == 6 and got["smallcnn"]["calls"] == 2


def test_counting_never_changes_a_value():
    net = models.build_classifier("smallcnn")
    x = torch.rand(5, 1, 28, 28, requires_grad=True)
    ref = torch.autograd.grad(net(x).logsumexp(1).sum(), x)[0]
    with passes.counting():
        got = torch.autograd.grad(net(x).logsumexp(1).sum(), x)[0]
    assert torch.equal(ref, got)


def _timing(process, work, done, ended, passes_=None, seconds=None):
    return {"seconds": seconds or round(ended - process, 2), "passes": passes_ or {},
            "clock": {"process": process, "start": work - 0.1, "work": work, "done": done, "ended": ended}}


def test_the_table_adds_floor_body_wall_and_overhead():
    rates = {"smallcnn": {"shape": [1, 28, 28], "fwd": {"per_s": 1000.0, "batch": 256},
                          "fwdbwd": {"per_s": 250.0, "batch": 128}}}
    timing = {
        "a": _timing(100.0, 101.5, 111.5, 111.6, {"smallcnn": {"shape": [1, 28, 28], "fwd": 3000, "bwd": 1000, "calls": 9}}),
        "b": _timing(113.0, 114.0, 116.0, 116.1),           # DVC's 1.4 s between a's end and b's start
        "c": _timing(900.0, 901.0, 902.0, 902.0),           # a later run: no gap counted
    }
    t = cost.table(timing, rates)
    a, b, c = t["stages"]["a"], t["stages"]["b"], t["stages"]["c"]
    assert a["floor_s"] == pytest.approx(1000 / 250 + 2000 / 1000) and a["body_s"] == pytest.approx(10.0)
    assert a["efficiency"] == pytest.approx(0.6) and a["passes"] == 3000 and a["bwd_passes"] == 1000
    assert b["wall_s"] == pytest.approx(116.1 - 111.6) and b["overhead_s"] == pytest.approx(4.5 - 2.0)
    assert c["wall_s"] == pytest.approx(2.0) and b["efficiency"] == 0
    st = t["study"]
    assert st["body_s"] == pytest.approx(13.0) and st["floor_s"] == pytest.approx(6.0)
    assert st["wall_s"] == pytest.approx(11.6 + 4.5 + 2.0)
    assert st["efficiency"] == pytest.approx(6.0 / 18.1, abs=1e-3)
    assert st["median_overhead_s"] == pytest.approx(1.6)  # a 1.6 (its own start-up), b 2.5, c 1.0
    # the overhead's parts: before the process (DVC, the stage before closing), start-up, closing
    assert (b["before_s"], b["startup_s"], b["closing_s"]) == pytest.approx((1.4, 1.0, 0.1))
    assert (a["before_s"], a["startup_s"], a["closing_s"]) == pytest.approx((0.0, 1.5, 0.1))
    for r in (a, b, c):
        assert r["before_s"] + r["startup_s"] + r["closing_s"] == pytest.approx(r["overhead_s"])
    assert (st["median_before_s"], st["median_startup_s"], st["median_closing_s"]) == pytest.approx((0.0, 1.0, 0.1))
    assert "1.40 / 1.00 / 0.10" in cost.markdown(t)
    assert "| **study** |" in cost.markdown(t)


def test_a_network_without_a_measured_rate_has_no_floor():
    t = cost.table({"a": _timing(0.0, 1.0, 2.0, 2.0, {"unet": {"shape": [1, 28, 28], "fwd": 5, "bwd": 5, "calls": 1}})}, {})
    assert t["stages"]["a"]["floor_s"] is None and t["stages"]["a"]["efficiency"] is None


def test_the_floor_measures_every_network_the_study_uses(monkeypatch):
    monkeypatch.setattr(cost, "MIN_S", 0.01)
    monkeypatch.setattr(cost, "BATCHES", (16, 64))
    # one thread: make test runs one worker per core
    p = config.parse({"run": {"threads": 1}, "attacker": {"hidden": 8, "width": 4}})
    got = cost.floor({"smallcnn": [1, 28, 28], "mlp": [1, 28, 28], "unet": [1, 28, 28], "reformer": [1, 28, 28]}, p)
    assert set(got) == {"smallcnn", "mlp", "unet", "reformer"}
    for name, r in got.items():  # a rate for each pass type, and the batch size that gave it
        assert r["shape"] == [1, 28, 28] and r["fwd"]["batch"] in (16, 64) and r["fwdbwd"]["batch"] in (16, 64)
        assert r["fwd"]["per_s"] > 0 and r["fwdbwd"]["per_s"] > 0


def test_measure_writes_the_cost_file_from_the_last_run_here(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "MIN_S", 0.01)
    monkeypatch.setattr(cost, "BATCHES", (16,))
    (tmp_path / "dvc.yaml").write_text("stages:\n  baseline:\n    cmd: x\n  report:\n    cmd: y\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "reports/timing").mkdir(parents=True)
    (tmp_path / "reports/timing/baseline.json").write_text(json.dumps(
        _timing(0.0, 1.0, 3.0, 3.1, {"smallcnn": {"shape": [1, 28, 28], "fwd": 64, "bwd": 64, "calls": 1}})))
    got = cost.measure(tmp_path)
    assert list(got["stages"]) == ["baseline"] and got["stages"]["baseline"]["floor_s"] > 0
    assert json.loads((tmp_path / cost.COST).read_text())["study"]["passes"] == 64
    # a floor measured beside other work is too low: the table says so
    real_floor = cost.floor
    monkeypatch.setattr(cost, "floor", lambda *a: (time.sleep(0.6), real_floor(*a))[1])  # a sample inside it
    monkeypatch.setattr(cost.hostload, "runnable", lambda *a: 6)  # 2 threads + the sampler + 3 others
    busy = cost.measure(tmp_path, again=True)
    assert busy["floor_others"] == 3.0 and "measured beside 3.0 other runnable threads" in cost.markdown(busy)
    assert cost.measure(tmp_path)["floor_others"] == 3.0  # reused with its floor
    assert not list((tmp_path / "reports/timing").glob(".*"))  # its samples: not left behind
    monkeypatch.setattr(cost.hostload, "runnable", lambda *a: 3)
    assert "measured beside" not in cost.markdown(cost.measure(tmp_path, again=True))


def test_a_stage_that_shared_its_cores_is_flagged(tmp_path):
    from advgame.pipeline import hostload
    # a at 2 threads with 3 runnable (itself + the sampler): alone; b with 5 or 6: two others
    load = [(101.0, 3), (105.0, 3), (111.0, 3), (114.5, 5), (115.5, 6), (500.0, 9)]
    timing = {"a": _timing(100.0, 101.0, 111.0, 111.1), "b": _timing(113.0, 114.0, 116.0, 116.1),
              "c": _timing(900.0, 901.0, 902.0, 902.0)}
    t = cost.table(timing, {}, load, threads=2)
    assert t["stages"]["a"]["others"] == 0.0 and t["stages"]["b"]["others"] == pytest.approx(2.5)
    assert t["stages"]["c"]["others"] is None  # no sample inside its body
    assert t["study"]["contended"] == ["b"]
    text = cost.markdown(t)
    assert "overstate its cost: `b`;" in text and "| 2.5 |" in text
    assert "not measured" in cost.markdown(cost.table(timing, {}, [], threads=2))
    assert "No stage shared" in cost.markdown(cost.table({"a": timing["a"]}, {}, load, threads=2))


def test_the_sampler_logs_the_runnable_threads_while_a_command_runs(tmp_path):
    import time

    from advgame.pipeline import hostload
    src = tmp_path / "loadavg"
    src.write_text("0.50 0.40 0.30 4/120 999\n")
    log = tmp_path / "t" / "load.log"
    with hostload.sampling(log, period=0.01, source=str(src)):
        time.sleep(0.1)
    got = hostload.samples(log)
    assert len(got) >= 2 and {n for _, n in got} == {4}
    assert hostload.others(got, got[0][0], got[-1][0], threads=2) == pytest.approx(1.0)
    (tmp_path / "t" / "other.log").write_text("12.0 3\ncut")  # a line cut by a kill is skipped
    assert hostload.samples(tmp_path / "t" / "other.log") == [(12.0, 3)]
    with hostload.sampling(tmp_path / "none.log", period=0.01, source=str(tmp_path / "missing")):
        pass  # a host without /proc/loadavg: nothing sampled, nothing written
    assert not (tmp_path / "none.log").exists() and hostload.samples(tmp_path / "none.log") == []


def test_a_run_that_began_after_the_stage_before_ended_starts_the_next_stages_wall():
    # a ended at 111.6; a new run began at 170 and b's process started at 171: b's wall is from 170,
    # not from a's end (59 s of nothing); without the mark it would be
    timing = {"a": _timing(100.0, 101.5, 111.5, 111.6), "b": _timing(171.0, 172.0, 174.0, 174.1)}
    assert cost.starts(timing)["b"] == pytest.approx(111.6)
    assert cost.starts(timing, [50.0, 170.0])["b"] == pytest.approx(170.0)
    assert cost.starts(timing, [50.0, 170.0])["a"] == pytest.approx(100.0)  # its run began too long before
    t = cost.table(timing, {}, [], threads=2, runs=[170.0])
    assert t["stages"]["b"]["before_s"] == pytest.approx(1.0) and t["stages"]["b"]["wall_s"] == pytest.approx(4.1)


def test_the_sampler_marks_where_each_run_began(tmp_path):
    from advgame.pipeline import hostload
    src, log = tmp_path / "loadavg", tmp_path / "load.log"
    src.write_text("0.5 0.4 0.3 3/100 1\n")
    for _ in range(2):
        with hostload.sampling(log, period=0.01, source=str(src)):
            pass
    marks = hostload.runs(log)
    assert len(marks) == 2 and marks[0] <= marks[1]
    assert all(n == 3 for _, n in hostload.samples(log))  # the marks are no samples
