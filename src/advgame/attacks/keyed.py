"""Random draws keyed by image, so that an image's attack does not depend on which others share it.

The cascade (evaluation/crosseval.py) runs each attack only on the images every attack before it
left unfooled, so an image is attacked within a different subset than in a flat run (every attack
on every image). If the random starts and Square's squares were drawn for x as given, an image's
draws would depend on its position in that subset, and the cascade could miss an image the flat
run fools. Here every draw is made for the whole evaluated set (`total` images, in a fixed
order) and each image takes its own row (`index`: x's rows in that set): for a given seed an image
gets the same draws whether it is attacked alone, in a subset or with every image, so an image's
result depends only on the image (up to the float rounding a batch's size causes, ~1e-6 in a
logit). Without `index`, x is the whole set, and the draws are the ones made for x itself.
"""
from __future__ import annotations

import torch


def rows(n: int, index: torch.Tensor | None, total: int | None) -> tuple[torch.Tensor, int]:
    """x's rows in the evaluated set and the set's size: (0..n-1, n) without `index`."""
    if index is None:
        return torch.arange(n), n
    if total is None or len(index) != n:
        raise ValueError(f"keyed draws need one index per image ({len(index)} for {n}) and the set's size")
    index = index.detach().cpu().long()
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= total):
        raise ValueError(f"image index outside the evaluated set of {total}")
    return index, total


def of_call(c) -> tuple[torch.Tensor | None, int | None]:
    """(index, total) of an attack table Call: set where the evaluation knows the images' rows
    (crosseval's ImageCall, whose `pool` is the evaluated set), else (None, None)."""
    index = getattr(c, "index", None)
    if index is None or c.pool is None:
        return None, None
    return index.detach().cpu().long(), len(c.pool[0])


def uniform(shape: tuple[int, ...], low: float, high: float, gen: torch.Generator,
            index: torch.Tensor, total: int) -> torch.Tensor:
    """Uniform draws in [low, high) of `shape` per image: the whole set's, at x's rows."""
    return torch.empty((total, *shape)).uniform_(low, high, generator=gen)[index]


def randint(high: int, shape: tuple[int, ...], gen: torch.Generator, index: torch.Tensor,
            total: int) -> torch.Tensor:
    """Integers in [0, high) of `shape` per image: the whole set's, at x's rows."""
    return torch.randint(0, high, (total, *shape), generator=gen)[index]
