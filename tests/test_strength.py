"""The attack-strength curve of a detector defender (stage strength-<defender>, issue 31)."""
import pytest
import yaml

from advgame import config
from advgame.evaluation.strength import saturated, strength_report
from advgame.pipeline import generator as pipeline
from advgame.names import strength_path

RAW = yaml.safe_load((pipeline.ROOT / "params.yaml").read_text())


@pytest.fixture(scope="module")
def curve(tiny_magnet):
    d, x, y = tiny_magnet
    x, y = x[:40], y[:40]
    out, seconds = strength_report(d, x, y, 0.3, pgd_steps=6, adaptive_starts=2, weights=(10.0,), batch=64,
                                   steps=(3,), starts=(0, 1))
    assert set(seconds) == {f"seconds_{s}x{k}" for s in (3, 6) for k in (0, 1, 2)}  # the stage's timing
    return out, d, x, y


def test_the_curve_has_the_schema_and_the_union_bounds_every_cell(curve):
    out, d, x, _ = curve
    assert {"defender", "eta", "n", "grid", "union", "saturated", "settings"} <= set(out)
    assert out["defender"] == d.name and out["n"] == len(x) and isinstance(out["saturated"], bool)
    assert [(r["steps"], r["starts"]) for r in out["grid"]] == [(3, 0), (3, 1), (3, 2), (6, 0), (6, 1), (6, 2)]
    for r in out["grid"]:
        assert {"steps", "starts", "error", "ci95", "n"} <= set(r) and "seconds" not in r
        assert r["n"] == len(x)
        assert r["error"] <= out["union"]["error"]
    assert out["settings"]["eval_setting"] == {"steps": 6, "starts": 2}


def test_the_clean_errors_count_in_every_cell(curve):
    out, d, x, y = curve
    clean = float(d.errors(x, y, clean=True).float().mean())
    assert all(r["error"] >= clean - 1e-9 for r in out["grid"])


def test_saturation_needs_the_union_and_a_flat_last_doubling():
    rows = [{"steps": s, "starts": 8, "error": e} for s, e in [(20, 0.80), (40, 0.85), (80, 0.852)]]
    assert saturated(rows, 0.855)
    assert not saturated(rows, 0.87)  # the largest setting misses what the grid found
    rows[1]["error"] = 0.80
    assert not saturated(rows, 0.855)  # doubling the steps still gains


def test_a_detector_defender_gets_a_strength_stage_the_report_reads():
    st = pipeline.stages(config.parse(RAW))
    assert "magnet" in RAW["study"]["defenders"] and "strength-magnet" in st
    assert strength_path("magnet") in st["publish"]["deps"]  # the report reads its copy
    assert [n for n in st if n.startswith("strength-")] == ["strength-magnet"]
    assert "eval" not in st["strength-magnet"]["params"]  # only the eval params it reads
    raw = {**RAW, "study": {**RAW["study"], "defenders": [d for d in RAW["study"]["defenders"] if d != "magnet"]}}
    st = pipeline.stages(config.parse(raw))
    assert not any(n.startswith("strength-") for n in st)
    assert not any(d.startswith("reports/strength/") for d in st["publish"]["deps"])


def test_the_file_and_the_results_key_follow_the_results_contract(curve):
    from test_docs import undocumented

    out = curve[0]
    assert undocumented(out, "reports/strength/<defender>.json") == []
    assert undocumented({"strength": {"magnet": out}}, "reports/results.json") == []


def test_the_report_renders_the_strength_section_and_figure(curve, tmp_path):
    from advgame.plotting import pyplot, save
    from advgame.report.strength import plot_strength, strength_section

    out = {**curve[0], "defender": "magnet"}
    md = "\n".join(strength_section({"magnet": out}))
    assert "### MagNet: attack strength" in md and "guided starts |" in md
    assert ("Not saturated" in md) != out["saturated"]
    assert f"{out['union']['error']:.3f}" in md
    assert plot_strength({"magnet": out}, tmp_path / "s.png", pyplot(), save) and (tmp_path / "s.png").exists()
    assert strength_section({}) == [] and not plot_strength({}, tmp_path / "t.png", pyplot(), save)


def test_q1_quotes_magnets_adaptive_attack_only_when_magnet_is_evaluated():
    from advgame.report.answers import _magnet_adaptive
    from advgame.report.study import Study

    p = config.parse(RAW)
    cell = {"error": 0.866, "ci95": [0.83, 0.89], "n": 500}
    row = {"defender": "magnet", "results": {"pgd-adaptive": {config.eta_key(p.attack.eta): cell}}}
    curve = {"eta": p.attack.eta, "union": {"error": 0.9, "ci95": [0.87, 0.92], "n": 500}}
    s = Study(p, {"magnet": row}, strength={"magnet": curve})
    text = " ".join(_magnet_adaptive(s))
    assert "1711.08478" in text and "0.866" in text and "0.900" in text
    assert _magnet_adaptive(Study(p, {"baseline": {"defender": "baseline", "results": {}}})) == []
