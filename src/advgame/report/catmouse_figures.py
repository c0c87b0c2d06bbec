"""The cat-and-mouse figures (stage catmouse): the curve of paper Figure 1 and the round x
attack error matrix, drawn from the numbers of advgame.defenses.catmouse."""
from __future__ import annotations

from pathlib import Path

from advgame.plotting import pyplot, save


def plot_curve(rows: list[dict], path: str | Path) -> None:
    """Paper Figure 1: u_k's error on its own FGSM-k and on the next FGSM-(k+1), against k."""
    plt = pyplot()
    ks = [r["k"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ks, [r["next_attack"] for r in rows], "o-", color="tab:red", label="next attack FGSM-(k+1)")
    ax.plot(ks, [r["own_attack"] for r in rows], "s-", color="tab:blue", label="own attack FGSM-k")
    ax.plot(ks, [r["clean"] for r in rows], "^--", color="tab:gray", label="clean")
    ax.set(xlabel="round k", ylabel="test error of u_k", ylim=(0, 1.02),
           title="Cat-and-mouse FGSM retraining")
    if ks:
        ax.set_xticks(ks if len(ks) <= 20 else ks[:: max(1, len(ks) // 10)])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path, dpi=120)


def plot_matrix(matrix: list[list[float]], rows: list[str], cols: list[str], path: str | Path) -> None:
    """Heat-map of the round x attack error matrix, each cell labelled with its value."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * max(len(cols), 1), 1.0 + 0.6 * max(len(rows), 1)))
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="Reds", aspect="auto")
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="attack", ylabel="defender", title="test error of u_i on FGSM-j")
    fig.colorbar(im, ax=ax, fraction=0.05)
    save(fig, path, dpi=120)
