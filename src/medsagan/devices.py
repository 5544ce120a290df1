"""Which torch device a run or a command uses."""

import torch

from .errors import RunError


def resolve_device(name: str) -> torch.device:
    """The torch device `name` asks for: "auto" is the CUDA GPU when there is one; a missing one is a RunError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"device {name!r} is unknown; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return device
