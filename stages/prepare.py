"""Stage prepare: dataset -> data/prepared/{train,test}.pt + meta.json."""
from advgame.data import prepare
from advgame.stage import run_stage


def body(ctx):
    d = ctx.params.data
    meta = prepare(d.dataset, "data/prepared", d.root, d.download, d.test_fraction, d.seed, d.train_n)
    print(f"prepare: {d.dataset}: train {meta['train']['shape']}, test {meta['test']['shape']}")
    return {"train_n": meta["train"]["shape"][0], "test_n": meta["test"]["shape"][0]}


if __name__ == "__main__":
    run_stage("prepare", body, sections=["data"], deps=["stages/prepare.py"])
