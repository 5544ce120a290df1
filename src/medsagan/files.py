"""Atomic writes: a file appears whole or not at all, so an interrupted run never leaves half a checkpoint."""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write(handle)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_tensors(path: str | Path) -> Any:
    """torch.load restricted to tensors and plain containers: a checkpoint cannot run code when read."""
    return torch.load(path, map_location="cpu", weights_only=True)
