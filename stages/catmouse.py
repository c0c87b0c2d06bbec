"""Stage catmouse: the round x attack matrix (u_i against FGSM-j) and the oscillation curve
(paper Figure 1) from the round stages' results.

    python stages/catmouse.py --data DIR --out DIR

The rounds' models and FGSM files are found by their names (advgame.names)."""
import argparse

from advgame import UserError
from advgame.artifacts import load_checkpoint, load_json, load_torch, save_json
from advgame.attacks.fgsm import fgsm
from advgame.data import load_split
from advgame.defenses.catmouse import attack_matrix, write_curve_csv
from advgame.models import model_from_checkpoint
from advgame.names import fgsm_test_path, model_path, round_model
from advgame.pipeline.stage import run_stage, stage_report_path
from advgame.report.catmouse_figures import plot_curve, plot_matrix


def body(ctx, data: str, out: str):
    p, cm = ctx.params, ctx.params.catmouse
    K, eta, batch = cm.rounds, p.attack.eta, p.eval.batch
    if K < 1:
        raise UserError("catmouse.rounds is 0: there is no round to draw; set it >= 1")
    rows = [{"k": k, **{c: load_json(stage_report_path(f"round-{k}"))[c]
                        for c in ("clean", "own_attack", "next_attack")}} for k in range(1, K + 1)]
    write_curve_csv(rows, f"{out}/curve.csv")
    plot_curve(rows, f"{out}/curve.png")

    rounds = [i for i in cm.matrix_rounds if i <= K]
    xt, yt = load_split(data, "test", p.eval.n_test)  # the evaluation's images
    xt, yt = xt.to(ctx.device), yt.to(ctx.device)
    models = {i: model_from_checkpoint(load_checkpoint(model_path(round_model(i))), "classifier").to(ctx.device).eval()
              for i in rounds}
    attacks = {}
    for i in rounds:
        j = i + 1
        if j <= K:  # FGSM-j was made against u_(j-1) by round j
            saved = load_torch(fgsm_test_path(j))
            if saved["x"].shape != xt.shape or not saved["y"].equal(yt.cpu()):
                raise UserError(f"{fgsm_test_path(j)} does not match {data}; rerun dvc repro")
            attacks[j] = saved["x"].to(ctx.device)
        else:  # FGSM-(K+1) = FGSM against u_K, made here
            attacks[j] = fgsm(models[i], xt, yt, eta, batch)
    error = attack_matrix(models, attacks, yt, batch)
    names = [f"fgsm-{j}" for j in attacks]
    save_json({"rounds": rounds, "attacks": names, "error": error, "eta": eta, "n_test": len(yt)}, f"{out}/matrix.json")
    plot_matrix(error, [f"u_{i}" for i in rounds], names, f"{out}/matrix.png")
    for f in ("matrix.png", "curve.png"):
        ctx.tracker.log_artifact(f"{out}/{f}", "catmouse")
    own = [r["own_attack"] for r in rows]
    nxt = [r["next_attack"] for r in rows]
    return {"own_attack_mean": sum(own) / K, "next_attack_mean": sum(nxt) / K,
            "next_attack_last": nxt[-1], "clean_last": rows[-1]["clean"], "n_test": len(yt)}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="folder of the curve and the matrix")
    a = ap.parse_args()
    run_stage("catmouse", lambda ctx: body(ctx, a.data, a.out), sections=["run", "attack", "catmouse", "eval"])
