"""Shared fixtures: small configurations and paths to the real data in ../shared/data."""

from pathlib import Path

import pytest
import torch

from medsagan.config import load_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    return SHARED


def tiny_config(**sections):
    """The paper's architecture at width 4: the same modules, small enough for unit tests."""
    base = {
        "model": {"conv_dim": 4, "residual_blocks": 1, "d_conv_dim": 4, "image_size": 32},
        "train": {
            "batch_size": 4,
            "iterations": 6,
            "validate_every": 3,
            "checkpoint_every": 2,
            "log_every": 2,
            "device": "cpu",
        },
        "data": {"path": "synthetic", "synthetic_count": 24},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return load_config(overrides=base)
