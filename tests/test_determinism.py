"""Same seed, same machine -> same bits: training through `fit` and the checkpoint bytes."""
import hashlib

import pytest
import torch

from advgame.artifacts import save_checkpoint
from advgame.config import TrainParams
from advgame.models import SmallCNN, classifier_meta
from advgame.runtime import compute_env, setup_torch
from advgame.training import fit, standard_objective


@pytest.fixture
def deterministic_torch():
    """setup_torch as a stage does it; torch's global settings restored afterwards."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    setup_torch(threads=1)
    yield
    torch.set_num_threads(saved[0])
    torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]


def train_and_save(tiny_mnist, path, seed=0):
    x, y, _, _ = tiny_mnist
    torch.manual_seed(seed)  # the weights' init draws from the global RNG, seeded at stage start
    model = SmallCNN()
    fit(model, x[:256], y[:256], standard_objective, TrainParams(epochs=1, batch=64, lr=2e-3, seed=seed))
    save_checkpoint(model, classifier_meta("smallcnn", x.shape, 10), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fit_twice_same_seed_gives_identical_checkpoint_bytes(tiny_mnist, tmp_path, deterministic_torch):
    first = train_and_save(tiny_mnist, tmp_path / "a.pt")
    assert train_and_save(tiny_mnist, tmp_path / "b.pt") == first
    assert train_and_save(tiny_mnist, tmp_path / "c.pt", seed=1) != first  # the seed does matter


def test_setup_torch_fixes_threads_and_kernels(deterministic_torch):
    assert torch.get_num_threads() == 1
    assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # CUDA ops without one warn, not fail
    env = compute_env(torch.device("cpu"))
    assert env["threads"] == 1 and env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
