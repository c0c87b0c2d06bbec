"""Error rates as result cells: the error over the test images with its 95% Wilson interval
(docs/protocol.md, "Statistics")."""
from __future__ import annotations

import torch


def wilson(k: float, n: int) -> list[float]:
    """95% Wilson score interval for k errors out of n (statsmodels' proportion_confint), rounded
    to 6 places."""
    if n == 0:
        return [float("nan"), float("nan")]
    from statsmodels.stats.proportion import proportion_confint  # 0.7 s: only where a cell is made
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    return [round(max(0.0, float(lo)), 6), round(min(1.0, float(hi)), 6)]


def cell(masks: list[torch.Tensor]) -> dict:
    """One result cell from per-seed boolean error masks: error (mean over seeds), its Wilson
    interval (on the mean count), n, and sd over seeds when there are several."""
    n = int(masks[0].numel())
    errs = [float(m.float().mean()) for m in masks]
    mean = sum(errs) / len(errs)
    out = {"error": round(mean, 6), "ci95": wilson(mean * n, n), "n": n}
    if len(errs) > 1:
        out["sd"] = round(float(torch.tensor(errs).std(unbiased=True)), 6)
        out["seeds"] = len(errs)
    return out
