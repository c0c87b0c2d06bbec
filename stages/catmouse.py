"""Stage catmouse: the round x attack matrix (u_i against FGSM-j) and the oscillation curve
(paper Figure 1) from the round stages' results."""
from advgame import UserError
from advgame.artifacts import load_checkpoint, load_json, load_torch, save_json
from advgame.attacks import fgsm
from advgame.catmouse import attack_matrix, plot_curve, plot_matrix, write_curve_csv
from advgame.data import load_split
from advgame.models import model_from_checkpoint
from advgame.stage import run_stage, stage_report_path

DATA = "data/prepared"
OUT = "reports/catmouse"


def model_path(i: int) -> str:
    return "models/baseline.pt" if i == 0 else f"models/adv-fgsm-{i}.pt"


def body(ctx):
    p, cm = ctx.params, ctx.params.catmouse
    K, eta, batch = cm.rounds, p.attack.eta, p.eval.batch
    if K < 1:
        raise UserError("catmouse.rounds is 0: there is no round to draw; set it >= 1")
    rows = [{"k": k, **{c: load_json(stage_report_path(f"round-{k}"))[c]
                        for c in ("clean", "own_attack", "next_attack")}} for k in range(1, K + 1)]
    write_curve_csv(rows, f"{OUT}/curve.csv")
    plot_curve(rows, f"{OUT}/curve.png")

    rounds = [i for i in cm.matrix_rounds if i <= K]
    xt, yt = load_split(DATA, "test")
    xt, yt = xt.to(ctx.device), yt.to(ctx.device)
    models = {i: model_from_checkpoint(load_checkpoint(model_path(i)), "classifier").to(ctx.device).eval() for i in rounds}
    attacks = {}
    for i in rounds:
        j = i + 1
        if j <= K:  # FGSM-j was made against u_(j-1) by round j
            saved = load_torch(f"data/fgsm/fgsm-{j}-test.pt")
            if saved["x"].shape != xt.shape or not saved["y"].equal(yt.cpu()):
                raise UserError(f"data/fgsm/fgsm-{j}-test.pt does not match {DATA}; rerun dvc repro")
            attacks[j] = saved["x"].to(ctx.device)
        else:  # FGSM-(K+1) = FGSM against u_K, made here
            attacks[j] = fgsm(models[i], xt, yt, eta, batch)
    error = attack_matrix(models, attacks, yt, batch)
    names = [f"fgsm-{j}" for j in attacks]
    save_json({"rounds": rounds, "attacks": names, "error": error, "eta": eta}, f"{OUT}/matrix.json")
    plot_matrix(error, [f"u_{i}" for i in rounds], names, f"{OUT}/matrix.png")
    for f in ("matrix.png", "curve.png"):
        ctx.tracker.log_artifact(f"{OUT}/{f}", "catmouse")
    own = [r["own_attack"] for r in rows]
    nxt = [r["next_attack"] for r in rows]
    return {"own_attack_mean": sum(own) / K, "next_attack_mean": sum(nxt) / K,
            "next_attack_last": nxt[-1], "clean_last": rows[-1]["clean"]}


if __name__ == "__main__":
    run_stage("catmouse", body, sections=["run", "attack", "catmouse", "eval"], deps=[DATA])
