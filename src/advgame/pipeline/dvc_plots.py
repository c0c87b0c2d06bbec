"""dvc.yaml's top-level plots (`dvc plots show`, and `dvc plots diff` to overlay two
experiments), written by the generator beside the stages."""
from __future__ import annotations

from advgame import config
from advgame import defense_table as registry
from advgame.names import PLOT_DATA, final_defenders


def plots(p: config.Params, st: dict) -> list:
    """Top-level plots (`dvc plots show`, and `dvc plots diff` to overlay two experiments): the
    data files behind the report's figures, and the figures themselves as images."""
    def line(name, file, x, ys, title, x_label, y_label="test error"):
        return {name: {"x": {file: x}, "y": {file: ys}, "template": "linear", "title": title,
                       "x_label": x_label, "y_label": y_label}}

    out = []
    if "catmouse" in st:
        out.append(line("catmouse_curve", "reports/catmouse/curve.csv", "k",
                        ["own_attack", "next_attack", "clean"],
                        "Cat-and-mouse: error of u_k on its own FGSM-k and on FGSM-(k+1)", "round k"))
        mr = [f"u_{k}" for k in p.catmouse.matrix_rounds if k <= p.catmouse.rounds]
        out.append(line("catmouse_matrix", PLOT_DATA["matrix"], "j", mr,
                        "Cat-and-mouse matrix: error of u_i (one line each) under FGSM-j", "attack FGSM-j"))
    out.append(line("eta_sweep", PLOT_DATA["eta_sweep"], "eta", final_defenders(p),
                    "PGD-curr error against eta, one line per defender", "eta"))
    games = [d.name for d in registry.DEFENSES if d.family == "game" and d.name in st]
    if games:
        out.append({"game_convergence": {
            "x": "epoch", "y": {f"reports/game/{m}.csv": ["defender_loss", "attacker_objective"] for m in games},
            "template": "linear", "title": "Game solvers: defender loss and attacker objective per epoch",
            "x_label": "epoch", "y_label": "loss"}})
        out.append({"game_exploitability": {
            "x": "epoch",
            "y": {f"reports/game/{m}.csv": ["exploitability", "probe_fresh_error", "probe_cotrained_error"]
                  for m in games},
            "template": "linear", "title": "Game: exploitability probe per epoch (validation split)",
            "x_label": "epoch", "y_label": "error"}})
    if "minimax" in st:
        out.append(line("gamma_sweep", PLOT_DATA["gamma_sweep"], "gamma",
                        ["clean", "pgd-curr", f"attnet-curr:{p.game.attacker_arch}"],
                        "Minimax: error against gamma (gamma = 0 is alt)", "gamma"))
    # one CSV per trained model (report/training.py): a folder's files are each a plot of these props
    out.append({PLOT_DATA["training"]: {"x": "epoch", "y": "val", "template": "linear",
                                        "title": "Validation curve (criterion: report section 1)",
                                        "x_label": "epoch", "y_label": "validation criterion"}})
    out.append({"reports/figures": {}})  # the report's PNGs as image plots
    return out
