"""Stage prepare: dataset -> <out>/{train,val,test}.pt + meta.json.

    python stages/prepare.py --out DIR
"""
import argparse

from advgame.data import prepare
from advgame.pipeline.stage import run_stage


def body(ctx, out: str):
    d = ctx.params.data
    meta = prepare(d.dataset, out, d.root, d.download, d.test_fraction, d.seed, d.train_n, d.val_n)
    print(f"prepare: {d.dataset}: train {meta['train']['shape']}, val {meta['val']['shape']}, "
          f"test {meta['test']['shape']}")
    return {"train_n": meta["train"]["shape"][0], "val_n": meta["val"]["shape"][0],
            "test_n": meta["test"]["shape"][0]}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="the prepared data folder")
    out = ap.parse_args().out
    run_stage("prepare", lambda ctx: body(ctx, out), sections=["data"], deps=["stages/prepare.py"])
