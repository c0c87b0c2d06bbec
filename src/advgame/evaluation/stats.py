"""Error rates as result cells: the error over the test images with its 95% Wilson interval
(docs/protocol.md, "Statistics")."""
from __future__ import annotations

import math

import torch

Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> list[float]:
    """95% Wilson score interval for k errors out of n."""
    if n == 0:
        return [float("nan"), float("nan")]
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)]


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
