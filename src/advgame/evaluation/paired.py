"""Paired comparisons on the same test images: McNemar's exact test on per-image outcomes, and the
seed agreement that decides whether a difference is called real.

Two unpaired 95% intervals that do not overlap is a weak and lopsided test; two attacks or two
defenders evaluated on the same images differ only where one errs and the other does not, and
McNemar's exact test asks whether those discordant images split evenly.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy.stats import binomtest
from scipy.stats import t as student_t

from advgame import masks

ALPHA = 0.05


def mcnemar(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b and c discordant pairs: the binomial test of b out of
    b + c at 1/2 (scipy's `binomtest`); 1 when there is no discordant pair."""
    n = b + c
    return 1.0 if n == 0 else float(binomtest(b, n, 0.5).pvalue)


@dataclass(frozen=True)
class SeedEffect:
    """A mean difference a - b over k training seeds with its standard error and degrees of
    freedom (seed_effect)."""
    mean: float
    se: float
    df: float
    k: int

    @property
    def p(self) -> float:
        """Two-sided p of "no difference" (Student's t on df; a z-test when df is infinite)."""
        if self.se == 0:
            return 1.0 if self.mean == 0 else 0.0
        return float(2 * student_t.sf(abs(self.mean) / self.se, self.df))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = float(student_t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.mean - half, self.mean + half


def seed_effect(da: dict[int, float], db: dict[int, float], n: int | None = None, a_only: int = 0,
                b_only: int = 0) -> SeedEffect | None:
    """The paired difference across training seeds: a - b over the seeds both were measured at,
    None under 2 seeds. As for a verdict's seed-level interval, two variances add: the seeds'
    spread of the difference, var / k, and the test images' sampling error of a paired
    difference, ((b + c) / n - ((b - c) / n)^2) / n from the main seed's discordant images (b, c),
    which more seeds do not shrink (every seed sees the same images); Welch-Satterthwaite degrees
    of freedom (k - 1 from the seeds, infinite from the images)."""
    common = [s for s in da if s in db]
    if len(common) < 2:
        return None
    image_var = max((a_only + b_only) / n - ((a_only - b_only) / n) ** 2, 0.0) / n if n else 0.0
    return across_seeds([da[s] - db[s] for s in common], image_var)


def across_seeds(d: list[float], image_var: float = 0.0) -> SeedEffect:
    """The mean of per-seed differences (at least 2) with the seeds' variance of the mean, var / k,
    plus `image_var`, the test images' sampling variance of the main seed's difference;
    Welch-Satterthwaite degrees of freedom."""
    k, m = len(d), statistics.fmean(d)
    seed_var = statistics.variance(d) / k
    var = seed_var + image_var
    df = var * var / (seed_var * seed_var / (k - 1)) if seed_var > 0 else math.inf
    return SeedEffect(m, math.sqrt(var), df, k)


@dataclass(frozen=True)
class SeedMean:
    """Our mean error over k training seeds that all ran on the same n test images, its standard
    error and degrees of freedom (`seed_mean`)."""
    mean: float
    se: float
    df: float

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = float(student_t.ppf(0.5 + level / 2, self.df)) * self.se
        return max(0.0, self.mean - half), min(1.0, self.mean + half)


def seed_mean(values: list[float], n: int) -> SeedMean:
    """Two parts of the error of the mean, added as variances: the seeds' spread, sd^2 / k (none
    with one seed: then only the test images count), and the test images' sampling error,
    m (1 - m) / n, which more seeds do not shrink (every seed sees the same images). Degrees of
    freedom by Welch-Satterthwaite: k - 1 from the seed part, infinite from the image part."""
    k, m = len(values), statistics.fmean(values)
    seed_var = statistics.variance(values) / k if k > 1 else 0.0
    image_var = max(m * (1 - m), 0.0) / n if n else math.inf
    var = seed_var + image_var
    df = var * var / (seed_var * seed_var / (k - 1)) if seed_var > 0 and math.isfinite(var) else math.inf
    return SeedMean(m, math.sqrt(var), df)


def seed_interval(values: list[float], n: int) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% interval of the mean error (seed_mean), clipped to [0, 1]."""
    est = seed_mean(values, n)
    return (est.mean, *est.interval())


def seed_test(da: dict[int, float], db: dict[int, float], n: int | None = None, a_only: int = 0,
              b_only: int = 0) -> tuple[float, float, int] | None:
    """(mean of a - b, two-sided p, seeds) of seed_effect; None under 2 seeds."""
    e = seed_effect(da, db, n, a_only, b_only)
    return None if e is None else (e.mean, e.p, e.k)


def mask(obj: dict | None, attack: str, eta: str) -> list[bool] | None:
    """Per-image errors of one cell (True = error) from an object holding `results` and
    `per_image`; None when the cell or its outcomes are missing."""
    if not obj:
        return None
    key = "0" if attack == "clean" else eta
    cell = obj.get("results", {}).get(attack, {}).get(key)
    text = obj.get("per_image", {}).get(attack, {}).get(key)
    if not isinstance(cell, dict) or not cell.get("n") or not isinstance(text, str):
        return None
    try:
        return masks.unpack(text, int(cell["n"]))
    except ValueError:
        return None


@dataclass
class Paired:
    """One comparison: a's error against b's on the same images."""
    a: str
    b: str
    ea: float
    eb: float
    n: int | None = None
    a_only: int | None = None  # images a gets wrong and b right
    b_only: int | None = None
    p: float | None = None
    seeds: int = 1
    seeds_agree: int = 1  # seeds whose difference has the same sign and p < ALPHA
    why_unpaired: str = ""
    unmeasured: tuple[str, ...] = ()  # sides with no numbers at the other training seeds
    p_holm: float | None = None   # p_test after Holm's correction within its family (None: not corrected)
    family: int = 1               # the number of tests in that family
    p_seeds: float | None = None  # the paired test across training seeds (seed_test), where >= 2 seeds measured both
    diff_seeds: float | None = None  # its mean difference a - b over those seeds
    ci_seeds: tuple[float, float] | None = None  # that difference's 95% interval (SeedEffect.interval)

    @property
    def p_test(self) -> float | None:
        """The test that decides: across training seeds where both sides have several, else
        McNemar's at the main seed."""
        return self.p_seeds if self.p_seeds is not None else self.p

    @property
    def real(self) -> bool:
        """Called a difference when the deciding test (p_test, after Holm's correction within its
        family where one was applied) has p < ALPHA; with one seed, McNemar's at the main seed."""
        p = self.p_test if self.p_holm is None else self.p_holm
        if self.p is None or p is None:
            return False
        return p < ALPHA and (self.p_seeds is not None or self.seeds_agree == self.seeds)

    @property
    def direction(self) -> str:
        """'lower' / 'higher' (a against b) when real, else 'same'."""
        if not self.real:
            return "same"
        return "lower" if self.ea < self.eb else "higher"

    def text(self) -> str:
        head = f"{self.a} {self.ea:.3f} vs {self.b} {self.eb:.3f}"
        if self.p is None:
            return f"{head} (no paired test: {self.why_unpaired})"
        holm = "" if self.p_holm is None else f", Holm-adjusted {fmt_p(self.p_holm)} over {self.family} tests"
        across = ("" if self.p_seeds is None else
                  f"across {self.seeds} training seeds: mean difference {self.diff_seeds:+.3f}, p = "
                  f"{fmt_p(self.p_seeds)}{holm}; at the main seed: ")
        return (f"{head} ({across}McNemar p = {fmt_p(self.p)}{'' if across else holm} on the same {self.n} images, "
                f"{self.a_only} vs {self.b_only} discordant; {self.seeds_agree} of {self.seeds} training seed"
                f"{'s' * (self.seeds != 1)} agree"
                + (f"; {', '.join(f'`{u}`' for u in self.unmeasured)} not run at the other training seeds"
                   if self.unmeasured else "") + ")")


def holm(ps: dict) -> dict:
    """Holm's step-down adjustment of a family of p-values {key: p} (statsmodels' multipletests):
    controls the family-wise error."""
    if not ps:
        return {}
    from statsmodels.stats.multitest import multipletests
    adjusted = multipletests(list(ps.values()), method="holm")[1]
    return {k: float(p) for k, p in zip(ps, adjusted)}


def fmt_p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def compare(a_obj: dict | None, a_attack: str, b_obj: dict | None, b_attack: str, eta: str,
            a_label: str, b_label: str, seeds: "SeedTable | None" = None,
            a_name: str | None = None, b_name: str | None = None) -> Paired | None:
    """Pair two cells (defender/ablation objects, attack names) at `eta`; None when a number is
    missing. `a_name`/`b_name` are the objects' names in names.SEEDS. Two cells on different
    numbers of images (the first n of the test split each) are paired on the shorter's images,
    and their errors are read there."""
    key = "0" if a_attack == "clean" else eta
    ca = (a_obj or {}).get("results", {}).get(a_attack, {}).get(key)
    cb = (b_obj or {}).get("results", {}).get(b_attack, {}).get("0" if b_attack == "clean" else eta)
    if not ca or not cb or ca.get("error") is None or cb.get("error") is None:
        return None
    out = Paired(a_label, b_label, float(ca["error"]), float(cb["error"]))
    ma, mb = mask(a_obj, a_attack, eta), mask(b_obj, b_attack, eta)
    if ma is None or mb is None:
        out.why_unpaired = "per-image outcomes missing"
    else:
        if len(ma) != len(mb):  # both are the first n of the test split: pair on the shorter's images
            k = min(len(ma), len(mb))
            ma, mb = ma[:k], mb[:k]
            out.ea, out.eb = round(sum(ma) / k, 6), round(sum(mb) / k, 6)
        out.n = len(ma)
        out.a_only = sum(x and not y for x, y in zip(ma, mb))
        out.b_only = sum(y and not x for x, y in zip(ma, mb))
        out.p = mcnemar(out.a_only, out.b_only)
    if seeds is not None and a_name and b_name:
        out.seeds, extra = seeds.agreement(a_name, a_attack, b_name, b_attack, key,
                                           out.ea < out.eb)
        out.seeds_agree = (1 if out.p is not None and out.p < ALPHA else 0) + extra
        da, db = seeds.by_seed(a_name, a_attack, key), seeds.by_seed(b_name, b_attack, key)
        got = seed_effect(da, db, out.n, out.a_only or 0, out.b_only or 0) if da and db and out.p is not None else None
        if got is not None:
            out.diff_seeds, out.p_seeds = round(got.mean, 4), got.p
            out.ci_seeds = tuple(round(x, 4) for x in got.interval())
        if seeds.n > 1:
            out.unmeasured = tuple(dict.fromkeys(
                n for n, att in ((a_name, a_attack), (b_name, b_attack))
                if seeds.per_seed(n, att, key) is None))
    else:
        out.seeds_agree = 1 if out.p is not None and out.p < ALPHA else 0
    return out


class SeedTable:
    """names.SEEDS (its shape: docs/results.md): per-seed errors of the headline cells. The main run
    is one of its seeds; the others are judged by the sign of their difference, since the file
    holds per-seed rates, not per-image outcomes."""

    def __init__(self, obj: dict | None):
        self.obj = obj or {}
        self.n = max(1, len(self.obj.get("seeds", [])))

    def by_seed(self, d: str, attack: str, eta: str) -> dict[int, float] | None:
        """seed -> error of a cell, over the seeds that measured it (the cell's `seeds`; a file
        from before those: every seed of the file); None when only the main run has it."""
        c = self.obj.get("defenders", {}).get(d, {}).get(attack, {}).get(eta, {})
        v, seeds = c.get("per_seed"), c.get("seeds", self.obj.get("seeds", []))
        ok = isinstance(v, list) and len(v) == len(seeds) and (len(v) > 1 or self.n == 1)
        return dict(zip(seeds, v)) if ok else None

    def per_seed(self, d: str, attack: str, eta: str) -> list[float] | None:
        got = self.by_seed(d, attack, eta)
        return list(got.values()) if got else None

    def agreement(self, a: str, a_attack: str, b: str, b_attack: str, eta: str,
                  a_lower: bool) -> tuple[int, int]:
        """(seeds both sides were measured at, other seeds whose difference has a's sign) - the
        main seed is counted by the caller from its paired test."""
        if self.n == 1:
            return 1, 0
        pa, pb = self.by_seed(a, a_attack, eta), self.by_seed(b, b_attack, eta)
        if pa is None or pb is None:  # a side run at the main seed only (a `--scope paper` seed's
            return 1, 0               # field defenders, an ablation): the main seed's test decides
        common = [s for s in pa if s in pb]
        same = sum((pa[s] < pb[s]) == a_lower and pa[s] != pb[s] for s in common)
        return len(common), max(0, same - 1)  # minus the main seed, which is among them
