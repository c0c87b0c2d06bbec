import os
import sys

import pytest
import torch

os.environ["ADVGAME_TRACKING"] = "off"  # unit tests never talk to MLflow (e2e turns it on)
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The end-to-end files first (test_e2e.py, the longest, at the head): `make test` hands out
    whole files in collection order (`--dist loadfile --no-loadscope-reorder`), so the longest
    file starts at once on its own worker while the others share the unit tests, instead of
    starting last and running alone at the end (the longest first: the classic schedule for
    jobs of known length on a few workers). Within each group the order is pytest's."""
    def rank(item) -> int:
        if item.get_closest_marker("e2e") is None:
            return 2
        return 0 if item.path.name == "test_e2e.py" else 1

    items.sort(key=rank)  # stable: each file keeps its tests' order


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Every test runs on one thread: `make test` runs one worker per core, and a worker on two
    threads oversubscribes the CPU for both (measured: a MagNet attack test 7 s alone, 77 s after
    a test left its worker on two under xdist). A stage run in-process (run_stage, and the floor
    and evaluate-your-own-model commands, set torch's threads from run.threads, 2 by default)
    sets one; everything else setup_torch does (deterministic kernels) is as in a stage."""
    from advgame import runtime
    from advgame.pipeline import stage

    real = runtime.setup_torch

    def one_thread(threads: int = 2, deterministic: bool = True) -> None:
        real(1 if threads else threads, deterministic)

    monkeypatch.setattr(runtime, "setup_torch", one_thread)
    monkeypatch.setattr(stage, "setup_torch", one_thread)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def tiny_mnist():
    """A small, real slice of mnist5k (train 600, test 200) for quick training tests."""
    from advgame.data import load_mnist5k

    (x, y), (xt, yt) = load_mnist5k(0.2, 0)
    return x[:600].clone(), y[:600].clone(), xt[:200].clone(), yt[:200].clone()


@pytest.fixture(scope="session")
def trained_smallcnn():
    """A SmallCNN trained 2 epochs on 2,000 mnist5k digits (about 5 s on one core)."""
    from advgame.config import TrainParams
    from advgame.data import load_mnist5k
    from advgame.models import SmallCNN
    from advgame.training import fit, standard_objective

    (x, y), (xt, yt) = load_mnist5k(0.2, 0)
    torch.manual_seed(0)
    m = SmallCNN()
    fit(m, x[:2000], y[:2000], standard_objective, TrainParams(epochs=2, batch=64, lr=2e-3))
    return m, xt[:300], yt[:300]


@pytest.fixture(scope="session")
def tiny_magnet(trained_smallcnn):
    """A MagNet-like defender: the conftest SmallCNN behind a reformer trained 2 epochs on 1,000
    digits, the detector's threshold rejecting 1% of 1,000 other training digits."""
    import copy

    from advgame.config import TrainParams
    from advgame.data import load_mnist5k
    from advgame.defenses import magnet
    from advgame.training import fit

    (x, y), _ = load_mnist5k(0.2, 0)
    torch.manual_seed(0)
    ae = magnet.Reformer(1)
    fit(ae, x[:1000], y[:1000], magnet.denoising_objective(0.1), TrainParams(epochs=2, batch=16, lr=3e-2))
    t = magnet.threshold_for(magnet.recon_errors(ae, x[3000:4000]), 0.01)
    clf, xt, yt = trained_smallcnn
    d = magnet.build_defender("magnet", copy.deepcopy(clf), ae, t, 1000.0)
    return d, xt[:100], yt[:100]


@pytest.fixture(scope="session")
def warm_server():
    """A fork server (`advgame warm`, as `make study` runs its stages) for the pipelines the
    end-to-end tests run: one per pytest worker, started once (about 10 s); each test puts it in
    its commands' environment with `warm_server.env(env)`."""
    from advgame.pipeline import warm

    with warm.server(python=sys.executable) as w:
        assert w is not None, "the fork server did not start"
        yield w
