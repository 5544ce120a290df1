"""Training-state checkpoints: everything needed to continue a run exactly where it stopped."""

import logging
import re
from pathlib import Path
from typing import Any

import torch

from .errors import RunError
from .files import atomic_torch_save, load_tensors

STATE_PATTERN = re.compile(r"state-(\d{8})\.pt$")
STATE_KEYS = {"iteration", "generator", "critic", "opt_g", "opt_d", "sampler", "rng", "best", "best_generator"}
log = logging.getLogger("medsagan")


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


def latest_state(run_dir: Path) -> dict[str, Any] | None:
    """The newest readable training state; None when the run stopped before its first checkpoint.

    An unreadable newest state (a disk that filled, a copy cut short) falls back to the one before, with a
    warning, so one bad file costs the iterations since the previous checkpoint, not the run.
    """
    states = list_states(run_dir)
    for path in reversed(states):
        try:
            state = load_tensors(path, "medsagan training checkpoint")
        except RunError as err:
            log.warning("warning: %s; falling back to the checkpoint before it", err)
            continue
        if not isinstance(state, dict) or not set(state) >= STATE_KEYS:
            log.warning("warning: %s is not a medsagan training checkpoint; falling back to the one before", path)
            continue
        return state
    if states:
        raise RunError(
            f"{run_dir}: none of the {len(states)} checkpoints in checkpoints/ can be read; "
            "start a new run with another --out"
        )
    return None


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
