import random

import pytest

from advgame import masks


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 500])
def test_pack_roundtrip(n):
    rng = random.Random(n)
    m = [rng.random() < 0.3 for _ in range(n)]
    s = masks.pack(m)
    assert len(s) == 2 * ((n + 7) // 8)
    assert masks.unpack(s, n) == m


def test_bit_order_is_little_endian():
    assert masks.pack([True] + [False] * 7 + [False, True]) == "0102"


def test_wrong_length_refused():
    with pytest.raises(ValueError):
        masks.unpack("00", 9)
