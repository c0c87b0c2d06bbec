"""Atomic writes and safe loads: an interrupted stage leaves nothing half-written behind."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from . import UserError


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: corrupt JSON ({e}); delete it and rerun dvc repro") from None


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Rows of plain values as CSV (header from the first row), written atomically."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else [])
        w.writeheader()
        w.writerows(rows)


def save_torch(obj: Any, path: str | Path) -> None:
    """Save tensors / state_dicts / plain containers (loadable with weights_only=True).

    The bytes depend only on `obj`: torch.save given a *path* names the zip archive's top folder
    after the file (here the random temporary name), so two saves of equal tensors differed and
    DVC reran everything downstream. Given an open file it uses the fixed name "archive"; the
    archive's other fields (serialization_id: a hash of record names and CRC32s; zip timestamps:
    fixed 1980-01-01) are content-derived in torch 2.x.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; run the stage that produces it (dvc repro)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(
            f"{path}: corrupt or not a weights-only checkpoint ({type(e).__name__}); "
            "delete it and rerun dvc repro"
        ) from None


def save_checkpoint(model: torch.nn.Module, meta: dict, path: str | Path, **extra: Any) -> None:
    """A checkpoint: the state_dict plus a small dict of plain values saying what produced it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch({"state_dict": state, "meta": meta, **extra}, path)


def load_checkpoint(path: str | Path) -> dict:
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "meta" not in ckpt:
        raise UserError(f"{path}: not an advgame checkpoint (no state_dict/meta); rerun dvc repro")
    return ckpt
