"""The Python API: `fit(config, run_dir)`, `load(run_dir)`, then `model.score(images)`.

>>> import medsagan
>>> cfg = medsagan.load_config(preset="fast", overrides={"data": {"path": "synthetic"}})
>>> run = medsagan.fit(cfg, "runs/synthetic")                  # doctest: +SKIP
>>> model = medsagan.load(run)                                 # doctest: +SKIP
>>> model.score(["chest.png", "scan.dcm"]).scores              # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .config import Config
from .data.readers import from_array, load_resized

if TYPE_CHECKING:  # heavy modules (training, evaluation, plotting) load when first used, not on import
    from .evaluate.results import EvalResult
    from .evaluate.scoring import Scores
    from .models import AnomalyDetector
    from .records import Calibration, Selection


def fit(config: Config, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train as `config` says; the run (checkpoints, best.pt, calibration) is written to `run_dir`."""
    from .train import fit as train

    return train(config, run_dir, resume=resume, progress=progress)


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    official: bool = False,
    device: str = "auto",
    drop_duplicates: bool = False,
    data: str | Path | None = None,
) -> EvalResult:
    """AUC, AP and thresholded metrics of a run on its dataset's split, written with curves.png.

    The files go under RUN/evaluation/SPLIT.
    `drop_duplicates`: leave out images byte-identical to a training or validation image (else an error).
    `data`: where the run's dataset lives now, when it has moved since training.
    """
    from .evaluate import results
    from .viz.plots import draw_curves

    result = results.evaluate_run(run_dir, split, official, device, drop_duplicates, data)
    draw_curves(result)
    return result


@dataclass
class Model:
    """A trained detector with its config, how its weights were selected, and its calibration."""

    detector: AnomalyDetector
    config: Config
    selection: Selection
    calibration: Calibration | None

    @property
    def threshold(self) -> float | None:
        """Scores at or above this are abnormal; None before the run is calibrated."""
        return self.calibration.threshold.value if self.calibration else None

    def prepare(self, images) -> torch.Tensor:
        """Images of any accepted kind as one tensor [N, C, S, S] at the model's size.

        Accepts paths, arrays [H, W] / [H, W, C] / [C, H, W] (uint8, or float in [0, 1]) or a tensor in [-1, 1].
        """
        size, channels = self.config.model.image_size, self.config.model.channels
        if isinstance(images, torch.Tensor):
            return images
        if isinstance(images, (str, Path, np.ndarray)):
            images = [images]
        batch = []
        for item in images:
            if isinstance(item, (str, Path)):
                batch.append(load_resized(item, size, channels))
                continue
            batch.append(from_array(item, size, channels))
        return torch.from_numpy(np.stack(batch))

    def score(self, images, keep_maps: bool = True) -> Scores:
        """Deterministic scores (and anomaly maps and restorations) of `images`."""
        from .evaluate.scoring import score_images

        return score_images(self.detector, self.prepare(images), keep_maps=keep_maps)


def load(run_dir: str | Path, device: str = "auto") -> Model:
    """The selected generator of a finished (or validated) run."""
    from .runs import RunDir, load_detector

    detector, cfg, selection = load_detector(run_dir, device)
    return Model(detector, cfg, selection, RunDir(run_dir).load_calibration(selection))
