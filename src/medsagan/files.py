"""Files a run writes and reads: atomic writes, a safe loader, a lock with one writer, contained paths."""

import errno
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

import torch

from .errors import DataError, RunError


def _umask() -> int:
    # The only portable way to read the umask is to set it; done at write time, not at import.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write through `write(handle)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named as medsagan's own, so that another process checking the folder meanwhile sees no foreign file.
    fd, tmp = tempfile.mkstemp(prefix=f".medsagan-{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if _disk_full(err, path.parent):
            raise RunError(
                f"{path}: no space left on the disk; the file it was replacing is intact. Free some space, then run "
                "the command again (a training run continues with --resume)"
            ) from None
        raise
    return path


def _disk_full(err: BaseException, folder: Path) -> bool:
    """Whether a failed write failed for want of space (torch.save reports it as a RuntimeError of its own)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(err, RuntimeError) and "write" in str(err).lower():
        try:
            return shutil.disk_usage(folder).free < 16 * 2**20
        except OSError:
            return False
    return False


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    """torch.save atomically: a killed process leaves the old file or the new one, never half of one."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_tensors(path: str | Path, what: str = "medsagan checkpoint") -> Any:
    """torch.load restricted to tensors and plain containers: a checkpoint cannot run code when read.

    A file the safe loader refuses, or a torn one, is a RunError that names the file; never PyTorch's
    advice to turn the safety off.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(
            f"{path}: not a {what}: it holds Python objects other than tensors and plain values (refused "
            "unread, since loading them could run code), or is no PyTorch file at all"
        ) from None
    except Exception as err:  # torch reports a torn or foreign file as many kinds of error
        problem = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise RunError(f"{path}: not a readable {what}; the file is truncated or corrupt ({problem})") from None


def contained(root: Path, name: str, where: str) -> Path:
    """`root / name`, refused when `name` is absolute or climbs out of `root` (`..`, a drive, a link)."""
    if any(ord(c) < 32 for c in name):
        raise DataError(
            f"{where}: the entry {name!r} holds a control character (NUL, newline, ESC...); rename the file"
        )
    relative = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) > 1 and name[1] == ":"  # C:\... on Windows
    if not name or relative.is_absolute() or ".." in relative.parts or drive:
        raise DataError(
            f"{where}: the entry {name!r} points outside {root}; names must be relative paths inside that folder"
        )
    path = root / relative
    resolved, base = path.resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise DataError(f"{where}: the entry {name!r} resolves to {resolved}, outside {root}; refusing to use it")
    return path


class LockHeld(RunError):
    """The lock is held by another process, named by its process id (`holder`)."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


class RunLock:
    """An exclusive OS lock on a run folder, held while one process writes the run.

    The kernel drops it when the process dies (even by kill -9), so a stale lock never blocks a resume.
    The holder's process id is written into the lock file so a refused writer can name it.
    """

    NAME = ".medsagan.lock"

    def __init__(self, run_dir: Path, name: str = NAME):
        self.path = Path(run_dir) / name
        self.handle: IO[str] | None = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; a RunError naming the holder's process if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LockHeld(
                f"{self.path.parent}: another medsagan process (pid {holder}) is writing this run; wait for it "
                "to finish or stop it, then resume with --resume, or choose another --out",
                holder,
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        """Give the lock back (closing its file releases it)."""
        if self.handle is not None:
            self.handle.close()  # closing the descriptor releases the lock
            self.handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _lock(handle: IO[str]) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


# What a folder written by each command holds, by the file that marks it.
OUTPUT_MARKERS = {
    "run": "config.yaml",
    "predict": "predictions.csv",
    "demo": "summary.json",
    "benchmark": "benchmark.json",
}
OUTPUT_NAMES = {"run": "a training run", "predict": "a predict output", "demo": "a demo", "benchmark": "a benchmark"}


def output_kind(folder: Path) -> str | None:
    """Which command's output `folder` is ("run", "predict", "demo", "benchmark"), or None."""
    if (folder / OUTPUT_MARKERS["benchmark"]).is_file():
        return "benchmark"
    if (folder / OUTPUT_MARKERS["demo"]).is_file() or (folder / "run").is_dir():
        return "demo"
    for kind, marker in OUTPUT_MARKERS.items():
        if (folder / marker).is_file():
            return kind
    return None


def check_output(path: str | Path, option: str = "--out", kind: str | None = None) -> Path:
    """Refuse an output location before any work is done; the path, unchanged.

    `kind` None: a file to write (no folder may stand there). Otherwise a folder for that command's output:
    it may be new, empty, or an earlier output of the same command (the command then decides what it
    continues or replaces), never a folder holding anything else.
    """
    path = Path(path)
    for above in [path, *path.parents]:
        if above.exists() or above.is_symlink():
            if above != path and not above.is_dir():
                raise DataError(f"{option} {path}: {above} is a file, so nothing can be written inside it")
            break
    if kind is None:
        if path.is_dir():
            raise DataError(f"{option} {path} is a folder; give the name of the file to write")
        return path
    if path.exists() and not path.is_dir():
        raise DataError(f"{option} {path} is a file; give a folder for {OUTPUT_NAMES[kind]}")
    # medsagan's own lock and decoded-image cache (a demo keeps it beside its run) make no folder foreign.
    entries = [p for p in path.iterdir() if not p.name.startswith(".medsagan")] if path.is_dir() else []
    if entries:
        found = output_kind(path)
        if found is None:
            raise DataError(
                f"{option} {path} already holds files that are not {OUTPUT_NAMES[kind]} ({entries[0].name}, ...); "
                "choose a new or empty folder"
            )
        if found != kind:
            raise DataError(f"{option} {path} holds {OUTPUT_NAMES[found]}, not {OUTPUT_NAMES[kind]}; choose another")
    return path
