"""The report's own figures: the defender x attack heat-map, error against eta, and adversarial
examples against the baseline."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from advgame import attack_table, config, names
from advgame.artifacts import load_checkpoint
from advgame.attacks.attnet import attnet
from advgame.attacks.fgsm import fgsm
from advgame.attacks.pgd import pgd
from advgame.models import predict
from advgame.plotting import pyplot, save
from advgame.report.study import Study
from advgame.report.tables import _cell, _float, attack_rank, columns, rows


def plot_heatmap(s: Study, path: Path) -> bool:
    """Defender x attack error at the training eta."""
    import numpy as np

    tr = rows(s.defenders)
    cols = columns(tr, s.eta, lambda a: not attack_table.matches(a, table="transfer"))
    if not tr or not cols:
        return False
    z = np.array([[(_cell(res, a, s.eta) or {}).get("error", np.nan) for a in cols] for _, res in tr], float)
    plt = pyplot()
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
    save(fig, path)
    return True


def plot_eta_sweep(s: Study, path: Path) -> bool:
    """One subplot per defender, one line per attack: error (with 95% CI band) against eta."""
    tr = [(label, res) for label, res in rows(s.defenders)]
    series = []
    for label, res in tr:
        lines = {}
        for a in sorted(res, key=attack_rank):
            if a in ("clean", "pgd-curr:art-subset") or not attack_table.matches(a, table="main"):
                continue
            pts = sorted((float(k), v) for k, v in res[a].items() if k != "0" and _float(k) is not None
                         and isinstance(v, dict) and v.get("error") is not None)
            if pts:
                lines[a] = pts
        series.append((label, lines))
    if not any(lines for _, lines in series):
        return False
    plt = pyplot()
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
    save(fig, path)
    return True


def adversarial_examples(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eta: float,
                         attackers: dict[str, torch.nn.Module], steps: int = 40,
                         step_ratio: float = 2.5, restarts: int = 1) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(attack, x_adv, predicted label) for clean, FGSM, PGD and each attacker network."""
    out = [("clean", x), (f"FGSM eta={eta:g}", fgsm(model, x, y, eta)),
           (f"PGD-{steps} eta={eta:g}", pgd(model, x, y, eta, steps, step_ratio * eta / steps, restarts))]
    for arch, att in attackers.items():
        out.append((f"AttNet[{arch}] eta={eta:g}", attnet(att.to(x.device), x, eta)))
    return [(name, xa, predict(model, xa)) for name, xa in out]


def load_examples(p: config.Params, root: str | Path = ".", device: str | torch.device = "cpu"):
    """Adversarial examples against the baseline for the figure; None when it is not trained."""
    from advgame.data import load_split
    from advgame.models import model_from_checkpoint

    root = Path(root)
    if not (root / names.model_path("baseline")).exists() or not (root / names.DATA / "test.pt").exists():
        return None
    model = model_from_checkpoint(load_checkpoint(root / names.model_path("baseline"))).to(device).eval()
    x, y = load_split(root / names.DATA, "test", p.report.examples)
    found = {f.stem: f for f in (root / "models/attackers/baseline").glob("*.pt")}
    archs = sorted(found, key=lambda a: attack_rank(f"attnet-curr:{a}"))
    attackers = {a: model_from_checkpoint(load_checkpoint(found[a])) for a in archs}
    ex = adversarial_examples(model, x.to(device), y.to(device), p.attack.eta, attackers,
                              p.eval.pgd_steps, p.eval.pgd_step_ratio, p.eval.pgd_restarts)
    return ex, y


def plot_examples(examples, y: torch.Tensor, path: Path) -> bool:
    """Rows: attacks; columns: test images; each title the baseline's prediction (red if wrong)."""
    n = len(y)
    plt = pyplot()
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
    save(fig, path)
    return True
