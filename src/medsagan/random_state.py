"""Random streams of a training state: saved with every checkpoint so a resumed run draws what it would have."""

from typing import Any

import torch


def rng_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """The state of each named generator and of torch's global (and CUDA) generators."""
    states = {name: g.get_state() for name, g in generators.items()}
    states["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(states: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Put every generator back where `rng_states` found it."""
    for name, g in generators.items():
        g.set_state(states[name])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
