"""The report's account of the AutoAttack cascade (evaluation/crosseval.py): per defender at the
main eta, the error before the cascade, after each of its attacks with the images each one
attacked and newly fooled, the saturation rerun, and the images only one attack fooled."""
from __future__ import annotations

from advgame import attack_table
from advgame.evaluation import paired
from advgame.evaluation.sanity import TOLERANCE
from advgame.report.study import Study
from advgame.report.tables import attack_rank, md_table


def _order(s: Study) -> list[str]:
    """The cascade's attacks that ran against some defender at the main eta, in its order."""
    seen = {a for o in s.defenders.values() for a in o.get("cascade", {}).get(s.eta, {})}
    return [n for n in attack_table.names(cascade=True) if n in seen]


def cascade_table(s: Study) -> str:
    order = _order(s)
    if not order:
        return "_no cascade at this eta_"
    body = []
    for d, o in s.defenders.items():
        casc = o.get("cascade", {}).get(s.eta, {})
        if not casc:
            continue
        first = casc[next(a for a in order if a in casc)]
        n = (s.get(d, "worst-case") or {}).get("n") or 0
        row = [f"`{d}`", f"{(n - first['ran_on']) / n:.3f}" if n else "n/a"]
        for a in order:
            c, cell = casc.get(a), s.get(d, a)
            row.append("n/a" if c is None or cell is None else
                       f"{cell['error']:.3f} (+{c['new']} of {c['ran_on']})")
        sat = o.get("saturation") or {}
        row.append(f"+{sat['more']} of {sat['attacked']} (first {sat['n']}): {sat['change']:+.3f}" if sat else "not run")
        body.append(row)
    return md_table(["defender", "before the cascade", *order, "twice the budget"], body)


def unique_table(s: Study) -> str:
    """Per defender, the images only one attack fooled (zeros left out)."""
    names = sorted({a for o in s.defenders.values() for a, k in o.get("unique", {}).get(s.eta, {}).items() if k},
                   key=attack_rank)
    if not names:
        return "_no attack fooled an image that no other attack fooled_"
    body = [[f"`{d}`", *[str(o.get("unique", {}).get(s.eta, {}).get(a, 0)) for a in names]]
            for d, o in s.defenders.items() if o.get("unique", {}).get(s.eta)]
    return md_table(["defender", *names], body)


def art_table(s: Study) -> str:
    """The independent check image by image at the main eta, on the images ART ran on (the first
    art_n): per defender the images ART's attacks fool and those ours fool (any other attack of
    the evaluation, the saturation rerun's finds included), each with the clean errors, and the
    images only one side fools. Every mask is read at its own cell's n (ours: every image)."""
    body = []
    for d, o in s.defenders.items():
        art = [a for a in o.get("per_image", {}) if attack_table.matches(a, needs="art")]
        theirs = [m for a in art if (m := paired.mask(o, a, s.eta))]
        clean = paired.mask(o, "clean", s.eta)
        if not (theirs and clean):
            continue
        ours = [m for a in o["per_image"] if a not in (*art, "worst-case") and (m := paired.mask(o, a, s.eta))]
        k = min(len(m) for m in theirs)
        t = [clean[i] or any(m[i] for m in theirs) for i in range(k)]
        u = [clean[i] or any(m[i] for m in ours if i < len(m)) for i in range(k)]
        body.append([f"`{d}`", str(k), str(sum(t)), str(sum(u)), str(sum(a and not b for a, b in zip(t, u))),
                     str(sum(b and not a for a, b in zip(t, u)))])
    if not body:
        return ""
    return md_table(["defender", "images", f"ART ({', '.join(s.params.art.attacks)})", "ours", "ART only",
                     "ours only"], body)


def cascade_section(s: Study) -> list[str]:
    if not _order(s):
        return []
    e = s.params.eval
    return [f"### The AutoAttack cascade at eta {s.eta} ({s.subset()})", "",
            "As AutoAttack runs it (Croce & Hein 2020): after every other attack of the table above, "
            "each attack of the cascade attacks only the images nothing before it fooled (for MagNet: "
            "misclassified and not rejected). A cell is the error *after* that attack, everything before "
            "it included (in the main table too), with the new images it fooled of those it attacked. "
            f"Budget: APGD {e.apgd_iters} iterations from {e.apgd_restarts} random start(s) (APGD-T: "
            f"per target class), APGD-T {e.apgd_targets} target classes, FAB-T {e.fab_targets} target "
            f"class(es) of {e.fab_iters} iterations, Square {e.square_queries} queries, FAB-T and Square "
            "one run each; AutoAttack's standard version runs one APGD start, 9 target classes for APGD-T "
            "and FAB-T and 5,000 Square queries (the cost of each: `make bench`). The last column is the "
            f"saturation check: the cascade again at twice the iterations and restarts on the first "
            f"{e.saturation_n} images, and how much it adds to worst-case (its finds count there: a robust "
            f"image is one no attack run here fooled; saturated: <= {TOLERANCE}).", "",
            cascade_table(s), "",
            "Images only one attack fooled (an attack outside the cascade: no other attack fooled the "
            "image; a cascade attack: its new images, which the cascade's later attacks never saw):", "",
            unique_table(s), "", *_art_part(s)]


def _art_part(s: Study) -> list[str]:
    table = art_table(s)
    return [] if not table else [
        f"The independent check: ART's {', '.join(s.params.art.attacks)} ({s.params.art.apgd_iters} iterations; "
        "adversarial-robustness-toolbox, a library we did not write) against ours on the images it ran on, "
        "image by image (an image counts as fooled where the attack succeeds or the clean image is already "
        "misclassified). The cascade does not skip ART's finds: it attacks them itself, so \"ART only\" "
        "counts images our evaluation missed.", "", table, ""]
