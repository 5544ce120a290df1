"""The training log: mean losses per logging window, appended as JSON lines, trimmed on resume."""

import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch

from .files import atomic_write_text

log = logging.getLogger("medsagan")


class Meter:
    """Mean of each loss over a logging window, and images per second."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Start a new window."""
        self.values, self.images, self.clock = defaultdict(list), 0, time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor], images: int) -> None:
        """Add one iteration's loss tensors and its images."""
        for key, value in stats.items():
            self.values[key].append(value)
        self.images += images

    def flush(self) -> dict[str, float]:
        """The window's mean losses and images per second; starts a new window."""
        elapsed = max(time.perf_counter() - self.clock, 1e-9)
        # Losses stay tensors until here: no device synchronisation inside the training step.
        means = {k: torch.stack(v).float().mean().item() for k, v in self.values.items()}
        means["images_per_s"] = self.images / elapsed
        self.reset()
        return means


def write_record(log_file, record: dict) -> None:
    """Append one JSON line to the log and flush it, so a killed run keeps what it logged."""
    log_file.write(json.dumps(record) + "\n")
    log_file.flush()


def truncate_log(path: Path, iteration: int) -> None:
    """Drop log records written after the checkpoint we resume from, so no iteration is logged twice.

    A torn line (the process was killed mid-write) is dropped too.
    """
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            log.warning("warning: %s: dropped an incomplete log line left by an interrupted run", path)
            continue
        if isinstance(record, dict) and record.get("iteration", iteration + 1) <= iteration:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def read_log(path: Path) -> list[dict]:
    """The records of log.jsonl; a torn line (a run killed mid-write) is left out."""
    records = []
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
