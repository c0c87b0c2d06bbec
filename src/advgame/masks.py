"""Per-image outcomes in the result files, so that two attacks or two defenders can be compared
on the same test images (McNemar's exact test) without rerunning anything.

A mask is a bool per evaluated image (True = an error), in the order of the evaluated test
subset. It is stored as a hex string of its bits packed little-endian (bit i of byte i // 8 is
image i); its length is the cell's `n`.
"""
from __future__ import annotations

from collections.abc import Sequence


def pack(mask: Sequence[bool]) -> str:
    """Bools -> hex string (2 characters per 8 images)."""
    out = bytearray((len(mask) + 7) // 8)
    for i, bad in enumerate(mask):
        if bad:
            out[i // 8] |= 1 << (i % 8)
    return out.hex()


def unpack(text: str, n: int) -> list[bool]:
    """Hex string of `pack` -> the first n bools."""
    data = bytes.fromhex(text)
    if len(data) != (n + 7) // 8:
        raise ValueError(f"mask of {len(data)} bytes cannot hold exactly {n} images")
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(n)]
