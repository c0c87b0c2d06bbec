"""Sens-FGSM's ablations: each variant's objective is what its name says (the control is fgsm-at
and Sens-FGSM without its surrogate; smooth is differentiable and its gradient is the true one;
tau changes the gradient, not the loss), the stage body writes the JSON the report reads, and
the pipeline has one stage per variant only when Sens-FGSM is in the study."""
import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from advgame import config, masks
from advgame.artifacts import load_checkpoint, save_checkpoint, save_torch
from advgame.attacks.fgsm import fgsm
from advgame.attacks.pgd import pgd
from advgame.defenses.fgsm_training import fgsm_at_objective, sens_fgsm_objective
from advgame.evaluation import ablation
from advgame.models import SmallCNN, classifier_meta, model_from_checkpoint
from advgame.names import ablation_name, ablation_variants
from advgame.pipeline import generator as pipeline

ROOT = Path(__file__).resolve().parents[1]
RAW = yaml.safe_load((ROOT / "params.yaml").read_text())
ETA = 0.3


def param_grad(model, objective, x, y):
    model.zero_grad(set_to_none=True)
    objective(model, x, y).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def input_grad(model, x, y):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return g


@pytest.fixture
def tiny_problem():
    """A smooth float64 conv net (tanh: finite differences cross no ReLU kink), inputs away from
    0 and 1, tau at the scale of the input gradients (tanh(g / tau) in its curved range)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    tau = float(input_grad(model, x, y).abs().median())
    return model, x, y, config.SensFgsmParams(tau=tau)


def test_control_is_fgsm_at_and_sens_fgsm_without_its_surrogate():
    torch.manual_seed(0)
    model = SmallCNN()
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    cfg = config.SensFgsmParams()
    g_off = param_grad(model, ablation.objective("sens-off", ETA, cfg), x, y)
    assert torch.equal(g_off, param_grad(model, fgsm_at_objective(ETA, cfg.a), x, y))
    g_no_surrogate = param_grad(model, sens_fgsm_objective(ETA, cfg.a, cfg.tau, surrogate=False), x, y)
    assert torch.allclose(g_off, g_no_surrogate, rtol=1e-5, atol=1e-7)
    # and it is a real difference from Sens-FGSM itself
    g_sens = param_grad(model, sens_fgsm_objective(ETA, cfg.a, cfg.tau), x, y)
    assert not torch.allclose(g_off, g_sens, rtol=1e-3, atol=1e-6)


def test_smooth_gradient_is_the_true_gradient_of_a_smooth_objective(tiny_problem):
    model, x, y, cfg = tiny_problem
    smooth = ablation.objective("smooth", ETA, cfg)
    g = param_grad(model, smooth, x, y)
    fd, h = [], 1e-6
    for p in model.parameters():
        flat = p.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = smooth(model, x, y).item()
            flat[i] = old - h
            down = smooth(model, x, y).item()
            flat[i] = old
            fd.append((up - down) / (2 * h))
    assert torch.allclose(g, torch.tensor(fd, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    # its forward step is tanh, not sign: the loss differs from Sens-FGSM's exact FGSM loss
    sens = ablation.objective("tau", ETA, cfg, cfg.tau)
    assert not torch.isclose(smooth(model, x, y), sens(model, x, y))


def test_tau_changes_the_gradient_but_not_the_loss(tiny_problem):
    model, x, y, cfg = tiny_problem
    lo, hi = (ablation.objective("tau", ETA, cfg, t) for t in (cfg.tau / 10, cfg.tau * 10))
    assert torch.equal(lo(model, x, y), hi(model, x, y))  # both the exact FGSM loss
    g_lo, g_hi = param_grad(model, lo, x, y), param_grad(model, hi, x, y)
    assert (g_lo - g_hi).norm() > 0.01 * g_hi.norm()
    # at the defender's own tau the variant is Sens-FGSM exactly
    assert torch.equal(param_grad(model, ablation.objective("tau", ETA, cfg, cfg.tau), x, y),
                       param_grad(model, sens_fgsm_objective(ETA, cfg.a, cfg.tau), x, y))
    with pytest.raises(ValueError, match="needs a tau"):
        ablation.objective("tau", ETA, cfg)
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation.objective("surrogate-off", ETA, cfg)


def params(**sections) -> config.Params:
    raw = copy.deepcopy(RAW)
    for s, v in sections.items():
        raw[s] = {**raw[s], **v}
    return config.parse(raw)


def stages(p):
    return yaml.safe_load(pipeline.render(p))["stages"]


def test_names_and_variants():
    assert ablation_name("tau", 0.001) == "tau-0p001" and ablation_name("smooth") == "smooth"
    p = params(ablation={"variants": ["smooth", "sens-off"], "taus": [0.1, 0.01, 0.001]})
    assert ablation_variants(p) == [("smooth", None), ("sens-off", None), ("tau", 0.001), ("tau", 0.1)]
    no_sens = [d for d in RAW["study"]["defenders"] if d != "sens-fgsm"]
    assert ablation_variants(params(study={"defenders": no_sens})) == []


def test_pipeline_has_one_stage_per_variant_and_the_report_reads_them():
    st = stages(params())
    names = [s for s in st if s.startswith("ablation-")]
    assert names == ["ablation-sens-off", "ablation-smooth", "ablation-tau-0p001", "ablation-tau-0p1"]
    assert list(st)[-1] == "report" and "ablation" in st["report"]["params"]
    for s in names:
        published = f"reports/ablation/{s.removeprefix('ablation-')}.json"
        out = f"reports/runs/ablation/{s.removeprefix('ablation-')}.json"
        assert out in st["publish"]["deps"] and out in st["headline"]["deps"]  # the report reads its copy
        assert out in st[s]["outs"]  # in DVC's cache; the headline stage publishes it for git
        assert {published: {"cache": False, "persist": True}} in st["headline"]["outs"]
        assert "models/baseline.pt" in st[s]["deps"] and "models/adv-fgsm-9.pt" in st[s]["deps"]
        assert "--fgsm-sources 1=models/baseline.pt,2=models/adv-fgsm-1.pt,5=models/adv-fgsm-4.pt," in st[s]["cmd"]
        assert f"--out-json {out}" in st[s]["cmd"] and "data/prepared" not in st[s]["cmd"].split("--data ")[0]
        assert "sens_fgsm" in st[s]["params"] and "ablation" not in st[s]["params"]
        assert not any(k.startswith(("game", "attacker", "art", "eval.strong")) for k in st[s]["params"]
                       if isinstance(k, str))  # the last param is the code hash: {codehash.json: [...]}
    assert "--variant tau --tau 0.001 " in st["ablation-tau-0p001"]["cmd"]
    # the block alone (without the code hash param every stage gets last)
    block = pipeline._ablation_stages

    # a new tau adds a stage and leaves the others as they were
    more = block(params(ablation={"taus": [0.001, 0.1, 1.0]}))
    assert "ablation-tau-1" in more and all(more[s] == {**st[s], "params": st[s]["params"][:-1]} for s in names)
    assert block(params(ablation={"variants": [], "taus": []})) == {}
    no_sens = [d for d in RAW["study"]["defenders"] if d != "sens-fgsm"]
    assert block(params(study={"defenders": no_sens})) == {}


def test_stage_body_writes_the_report_shape(tiny_mnist, tmp_path, monkeypatch):
    x, y, xt, yt = tiny_mnist
    monkeypatch.chdir(tmp_path)
    save_torch({"x": x[:96], "y": y[:96]}, "data/prepared/train.pt")
    save_torch({"x": x[96:128], "y": y[96:128]}, "data/prepared/val.pt")
    save_torch({"x": xt, "y": yt}, "data/prepared/test.pt")
    meta = classifier_meta("smallcnn", x.shape, 10)
    for seed, name in ((0, "baseline"), (1, "adv-fgsm-1")):
        torch.manual_seed(seed)
        save_checkpoint(SmallCNN(), meta, f"models/{name}.pt")
    p = config.parse({"sens_fgsm": {"epochs": 1, "batch": 32},
                      "eval": {"n_test": 40, "batch": 64, "pgd_steps": 3, "seeds": [0, 1]}})
    final = ablation.run_ablation(p, "tau", 0.05, "data/prepared", "models/baseline.pt",
                                  {1: "models/baseline.pt", 2: "models/adv-fgsm-1.pt"},
                                  "models/ablation/tau-0p05.pt", "reports/ablation/tau-0p05.json")

    out = json.loads(Path("reports/ablation/tau-0p05.json").read_text())
    assert set(out) == {"name", "variant", "eta", "results", "per_image", "training"}
    assert out["training"]["ablation-tau-0p05"]["criterion"] == "PGD-20 error"
    assert out["training"]["ablation-tau-0p05"]["epochs"] == 1
    assert out["name"] == "tau-0p05" and out["eta"] == 0.3
    assert out["variant"]["kind"] == "tau" and out["variant"]["tau"] == 0.05 and out["variant"]["epochs"] == 1
    attacks = {"clean", "fgsm-1", "fgsm-2", "fgsm-curr", "pgd-curr", "pgd-transfer:baseline"}
    assert set(out["results"]) == set(out["per_image"]) == attacks
    for a in attacks:
        key = "0" if a == "clean" else "0.3"
        assert list(out["results"][a]) == list(out["per_image"][a]) == [key]
        c = out["results"][a][key]
        assert c["n"] == 40 and final[f"{a}_error"] == c["error"]
        bits = masks.unpack(out["per_image"][a][key], 40)
        if a not in ("pgd-curr", "pgd-transfer:baseline"):  # one mask: the cell is its mean
            assert c["error"] == pytest.approx(sum(bits) / 40)
        else:
            assert c["seeds"] == 2

    # the numbers are those of the saved model, each attack against the model it names
    model = model_from_checkpoint(load_checkpoint("models/ablation/tau-0p05.pt")).eval()
    base = model_from_checkpoint(load_checkpoint("models/baseline.pt")).eval()
    u1 = model_from_checkpoint(load_checkpoint("models/adv-fgsm-1.pt")).eval()
    assert load_checkpoint("models/ablation/tau-0p05.pt")["meta"]["ablation"]["kind"] == "tau"
    xe, ye = xt[:40], yt[:40]

    def bits(a):
        return masks.unpack(out["per_image"][a]["0" if a == "clean" else "0.3"], 40)

    def wrong(xa):
        with torch.no_grad():
            return (model(xa).argmax(1) != ye).tolist()

    assert bits("clean") == wrong(xe)
    assert bits("fgsm-curr") == wrong(fgsm(model, xe, ye, ETA))
    assert bits("fgsm-1") == wrong(fgsm(base, xe, ye, ETA))  # FGSM-k comes from u_(k-1)
    assert bits("fgsm-2") == wrong(fgsm(u1, xe, ye, ETA))
    step = 2.5 * ETA / 3
    assert bits("pgd-transfer:baseline") == wrong(pgd(base, xe, ye, ETA, steps=3, step_size=step, seed=0))
    assert bits("pgd-curr") == wrong(pgd(model, xe, ye, ETA, steps=3, step_size=step, seed=0))
