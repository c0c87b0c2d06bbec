"""Atomic writes and safe loads: an interrupted stage leaves nothing half-written behind, and
every file a user can break (missing, corrupt, foreign, unwritable) is named in one line that
says what to do. torch is imported only where tensors are read or written, so the torch-free
check-params stage can use the JSON helpers."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advgame import UserError

if TYPE_CHECKING:
    import torch

# errors that mean "this place cannot be written", not a bug: one line instead of a traceback
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def unwritable_message(e: OSError, target: str | Path | None = None) -> str:
    where = Path(target or e.filename or "?")
    folder = where if where.is_dir() else where.parent
    what = f"{target}: cannot write" if target else f"cannot write {where}"
    fix = "free some disk space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else \
        f"make {folder} writable (e.g. chmod -R u+w {folder}) or run where you can write"
    return f"{what} ({e.strerror}); {fix}, then rerun"


def producer_hint(path: str | Path, dvc_yaml: str | Path = "dvc.yaml") -> str:
    """What to run to (re)build `path`: the dvc.yaml stage that writes it, if there is one (advice
    must never name a stage the pipeline does not have)."""
    import yaml

    path, stages = Path(path).as_posix(), {}
    try:
        stages = yaml.safe_load(Path(dvc_yaml).read_text()).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    for name, st in stages.items():
        for group in ("outs", "metrics", "plots"):
            for o in st.get(group) or []:
                out = o if isinstance(o, str) else next(iter(o))
                if path == out or path.startswith(out.rstrip("/") + "/"):
                    return f"run `dvc repro {name}`"
    return (f"no stage of {dvc_yaml} writes it: if its defender is missing from study.defenders, "
            "add it in params.yaml and run `make pipeline`, then `dvc repro`")


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise UserError(unwritable_message(e, path)) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
        try:
            os.replace(tmp, path)
        except OSError as e:
            if e.errno not in UNWRITABLE:
                raise
            raise UserError(unwritable_message(e, path)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; {producer_hint(path)}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: corrupt JSON ({e}); delete it, then {producer_hint(path)}") from None


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
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    import torch

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: not found; {producer_hint(path)}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for a truncated or foreign file
        raise UserError(
            f"{path}: corrupt or not a weights-only checkpoint ({type(e).__name__}; nothing in it was "
            f"executed); restore it with `dvc checkout {path}` or delete it and {producer_hint(path)}"
        ) from None


def save_checkpoint(model: torch.nn.Module, meta: dict, path: str | Path, **extra: Any) -> None:
    """A checkpoint: the state_dict plus a small dict of plain values saying what produced it."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_torch({"state_dict": state, "meta": meta, **extra}, path)


class Checkpoint(dict):
    """A loaded checkpoint that remembers its file, so that a later error can name it."""

    path: str = "checkpoint"


def load_checkpoint(path: str | Path) -> Checkpoint:
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or not isinstance(ckpt.get("meta"), dict):
        raise UserError(f"{path}: not an advgame checkpoint (no state_dict/meta); restore it with "
                        f"`dvc checkout {path}` or {producer_hint(path)}")
    out = Checkpoint(ckpt)
    out.path = str(path)
    return out
