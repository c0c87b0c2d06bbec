"""Reading result cells and writing markdown tables: the report's vocabulary (formats, interval
comparison, attack order) shared by every section."""
from __future__ import annotations

import math

from advgame import attack_table, config

# Hamm & Mehra, Table 5 (MNIST error rates): defender -> eta -> (FGSM-curr, AttNet-curr).
PAPER_TABLE5 = {
    "minimax": {"0.3": (0.218, 0.020), "0.4": (0.238, 0.552), "0.5": (0.342, 1.000), "0.6": (0.299, 1.000)},
    "alt": {"0.3": (0.244, 0.104), "0.4": (0.503, 0.873), "0.5": (0.289, 0.902), "0.6": (0.157, 0.899)},
    "sens-fgsm": {"0.3": (0.048, 0.965), "0.4": (0.038, 0.902), "0.5": (0.039, 1.000), "0.6": (0.033, 0.903)},
}
PAPER_NAMES = {"minimax": "Minimax", "alt": "Alt", "sens-fgsm": "Sens FGSM"}
PAPER_K = 80  # the paper's cat-and-mouse rounds (Figure 1); its "FGSM-81" is FGSM-(K+1) against u_K


def same_parity(k: int) -> bool:
    """Whether our last round K has the paper's parity: the cat-and-mouse error alternates between
    rounds, so FGSM-(K+1) on u_K is comparable with the paper's FGSM-81 on u_80 only then."""
    return (k - PAPER_K) % 2 == 0


def next_round(k: int) -> str:
    """Our FGSM-(K+1) named by its real round, beside the paper's FGSM-81."""
    return (f"FGSM-{k + 1} on u_{k} here, the paper's FGSM-{PAPER_K + 1} on u_{PAPER_K}: "
            + ("the same parity" if same_parity(k) else "the other parity, so the other phase of the alternation"))
SANITY = {
    "pgd_ge_fgsm": "PGD error >= FGSM error (an iterative attack is not weaker than one step)",
    "error_grows_to_one": "error reaches ~100% as eta grows",
    "black_box_le_white_box": "Square (black-box), last in the cascade, fools <= 0.5% of the images beyond every white-box attack",
    "transfer_le_white_box": "transfer error <= white-box error",
    "saturated": "the cascade at twice the iterations and restarts adds <= 0.005 to worst-case (first eval.saturation_n images)",
    "attnet_le_pgd": "no learned attacker beats our PGD (pgd-adaptive with a detector)",
    "attnet_attacks": "every learned attacker beats the clean error (baseline)",
}
GREY = ":grey-box"
FLAT, BROKEN = 0.9, 0.5  # "falls flat" / "largely broken" thresholds of question 3
FIELD = ("pgd-at", "trades", "fgsm-rs", "magnet")

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
    """Report order, the attack table's `rank`: clean, FGSM-k (by k), FGSM-curr, PGD, AttNet-curr
    (by architecture), APGD, Square, transfer, worst-case; unknown names last."""
    hit = attack_table.find(name)
    if hit is None:
        return (10, 0, name)
    a, member = hit
    if member is None:
        return (a.rank, 0, "")
    if member.isdigit():
        return (a.rank, int(member), "")
    return (a.rank, archs.index(member) if member in archs else len(archs), member)


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


def error_table(table_rows, eta: str, cols: list[str], ci: bool = True, skip_empty: bool = False,
                labels: dict[str, str] | None = None) -> str:
    """`labels`: a column's header where it is not the attack's name."""
    if not cols:
        return "_no results at this eta_"
    body = [[f"`{label}`", *[fmt(_cell(res, a, eta), ci) for a in cols]] for label, res in table_rows]
    if skip_empty:
        body = [r for r in body if any(c != "n/a" for c in r[1:])]
    return md_table(["defender", *[(labels or {}).get(a, a) for a in cols]], body)


def _float(v: str) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
