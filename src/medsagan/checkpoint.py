"""Training-state checkpoints: everything needed to continue a run exactly where it stopped."""

import re
from pathlib import Path
from typing import Any

import torch

from .errors import RunError
from .files import atomic_torch_save, load_tensors

STATE_PATTERN = re.compile(r"state-(\d{8})\.pt$")


def state_path(run_dir: Path, iteration: int) -> Path:
    return run_dir / "checkpoints" / f"state-{iteration:08d}.pt"


def list_states(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    found = [p for p in folder.glob("state-*.pt") if STATE_PATTERN.search(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(STATE_PATTERN.search(p.name).group(1)))


def save_state(run_dir: Path, iteration: int, state: dict[str, Any], keep: int) -> Path:
    """Write atomically, then drop the oldest states beyond `keep`."""
    path = atomic_torch_save(state_path(run_dir, iteration), state)
    for old in list_states(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def latest_state(run_dir: Path) -> dict[str, Any]:
    states = list_states(run_dir)
    if not states:
        raise RunError(f"{run_dir}: no training checkpoint in checkpoints/ to resume from; start a new run instead")
    return load_tensors(states[-1])


def rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    states = {name: g.get_state() for name, g in generators.items()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    for name, g in generators.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
