"""The report's account of the cascade: the independent check (ART) against ours, image by image."""
from types import SimpleNamespace

from advgame import masks
from advgame.report.cascade import art_table


def _obj(n: int, art_n: int, ours: set[int], art: set[int], clean: set[int]) -> dict:
    def cellmask(k: int, hits: set[int]) -> tuple[dict, str]:
        bits = [i in hits for i in range(k)]
        return {"error": sum(bits) / k, "n": k}, masks.pack(bits)

    entries = {"clean": ("0", n, clean), "pgd-curr": ("0.3", n, ours), "art:apgd-ce": ("0.3", art_n, art),
               "worst-case": ("0.3", n, ours | art | clean)}
    results, per_image = {}, {}
    for a, (key, k, hits) in entries.items():
        c, text = cellmask(k, hits)
        results[a], per_image[a] = {key: c}, {key: text}
    return {"results": results, "per_image": per_image, "settings": {"n_by_eta": {"0.3": n}, "art_n": art_n}}


def test_art_table_reads_each_mask_at_its_own_length():
    """Our masks hold every test image (1,000), ART's the first 100: each is read at its own n, the
    comparison on the first 100 (session 29's report failed on exactly this), worst-case (which
    holds ART's finds) not counted as ours, a clean error fooled for both."""
    o = _obj(1000, 100, ours=set(range(10)) | {500, 900}, art=set(range(5, 15)), clean={50})
    s = SimpleNamespace(defenders={"d": o}, eta="0.3", params=SimpleNamespace(art=SimpleNamespace(attacks=["apgd-ce"])))
    rows = art_table(s).splitlines()
    assert rows[0].startswith("| defender | images | ART (apgd-ce) | ours | ART only | ours only |")
    assert rows[2] == "| `d` | 100 | 11 | 11 | 5 | 5 |"


def test_art_table_is_empty_without_the_check():
    o = _obj(100, 100, ours={1}, art=set(), clean=set())
    del o["per_image"]["art:apgd-ce"]
    s = SimpleNamespace(defenders={"d": o}, eta="0.3", params=SimpleNamespace(art=SimpleNamespace(attacks=[])))
    assert art_table(s) == ""
