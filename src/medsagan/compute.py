"""Training compute counted, not timed: FLOPs of the loop's own iteration times iterations, plus validation.

The count uses torch.utils.flop_counter's operator formulas (flops.py) (convolutions, matmuls and their backwards, the
gradient penalty's double backward included), on random images with a run's own settings, in float32 on the
CPU: FLOPs do not depend on the pixels, the precision or the machine, so the figure means the same anywhere.
"""

import json
from pathlib import Path

import torch

from .config import Config
from .distributed import SINGLE, World
from .flops import FlopCounter
from .models import build_generator
from .runs import RunDir
from .trainer import Trainer


def make_trainer(cfg: Config, device: torch.device, world: World = SINGLE) -> Trainer:
    """A Trainer with `cfg`'s settings on random images (pools of at least one batch)."""
    size, channels, batch = cfg.model.image_size, cfg.model.channels, cfg.train.batch_size
    pool = max(batch, 64)
    images = lambda: torch.randint(0, 256, (pool, channels, size, size), dtype=torch.uint8)  # noqa: E731
    return Trainer(cfg, device, images(), images(), world)


def flops_per_iteration(trainer: Trainer) -> float:
    """Counted FLOPs of one iteration, averaged over a cycle of n_critic steps (critic-only and generator)."""
    cycle = trainer.cfg.train.n_critic
    with FlopCounter() as counter:
        for step in range(1, cycle + 1):
            trainer.iteration(step)
    return counter.total / cycle


def generator_gflop_per_image(cfg: Config) -> float:
    """Counted GFLOP of one eval-mode restoration (what validation and scoring spend per image)."""
    generator = build_generator(cfg.model).eval()
    x = torch.zeros(1, cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    with FlopCounter() as counter, torch.no_grad():
        generator(x)
    return counter.total / 1e9


def counted_config(cfg: Config) -> Config:
    """`cfg` as the count runs it: float32 on the CPU, not compiled (none of which changes the FLOPs)."""
    return cfg.replace(train={"device": "cpu", "precision": "float32", "compile": False, "time_budget": ""})


def training_compute(run_dir: str | Path) -> dict:
    """A finished run's counted compute: iterations x FLOPs per iteration, plus validation and calibration.

    Each validation scores the held-out images once, and pseudo-anomalies made from the held-out normals when
    there are at least 2 (runs from before that signal existed did not: their logs lack val/pseudo); the final
    calibration scores the held-out images again.
    """
    run = RunDir(run_dir)
    if run.members():
        return _ensemble_compute(run)
    cfg = counted_config(run.load_config())
    per_iteration = flops_per_iteration(make_trainer(cfg, torch.device("cpu"))) / 1e9
    held_out = json.loads(run.data.read_text())["validation"]
    images = held_out["normal"] + held_out["positive"]
    t = cfg.train
    validations = t.iterations // t.validate_every + (1 if t.iterations % t.validate_every else 0)
    pseudo = held_out["normal"] if held_out["normal"] >= 2 and '"val/pseudo"' in run.log.read_text() else 0
    validation = generator_gflop_per_image(cfg) * (images * (validations + 1) + pseudo * validations)
    return {
        "iterations": t.iterations,
        "gflop_per_iteration": round(per_iteration, 2),
        "validation_tflop": float(f"{validation / 1e3:.3g}"),
        "training_tflop": float(f"{(per_iteration * t.iterations + validation) / 1e3:.3g}"),
    }


def _ensemble_compute(run: RunDir) -> dict:
    """An ensemble's: its members' runs, plus the ensemble's own validation and calibration of the held-out images."""
    parts = [training_compute(member.path) for member in run.members()]
    held_out = json.loads(run.data.read_text())["validation"]
    images = held_out["normal"] + held_out["positive"]
    checks = 2 * generator_gflop_per_image(counted_config(run.load_config())) * images
    return {
        "iterations": sum(p["iterations"] for p in parts),
        "gflop_per_iteration": parts[0]["gflop_per_iteration"],
        "validation_tflop": float(f"{(sum(p['validation_tflop'] for p in parts) + checks / 1e3):.3g}"),
        "training_tflop": float(f"{(sum(p['training_tflop'] for p in parts) + checks / 1e3):.3g}"),
        "members": parts,
    }
