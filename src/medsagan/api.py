"""The Python API: `fit(config, run_dir)`, `load(run_dir)`, then `model.score(images)`.

>>> import medsagan
>>> cfg = medsagan.load_config(preset="fast", overrides={"data": {"path": "synthetic"}})
>>> run = medsagan.fit(cfg, "runs/synthetic")                  # doctest: +SKIP
>>> model = medsagan.load(run)                                 # doctest: +SKIP
>>> model.score(["chest.png", "scan.dcm"]).scores              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config

if TYPE_CHECKING:  # heavy modules (training, evaluation, plotting) load when first used, not on import
    from .evaluate.ground_truth import GroundTruth
    from .evaluate.results import EvalResult
    from .inference import Detector


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
    ground_truth: GroundTruth | None = None,
) -> EvalResult:
    """AUC, AP and thresholded metrics of a run on its dataset's split, written with curves.png.

    The files go under RUN/evaluation/SPLIT.
    `drop_duplicates`: leave out images byte-identical to a training or validation image (else an error).
    `data`: where the run's dataset lives now, when it has moved since training.
    `ground_truth`: lesion masks or boxes (evaluate.ground_truth.GroundTruth), for the localisation metrics.
    """
    from .evaluate import results
    from .viz.plots import draw_curves

    result = results.evaluate_run(run_dir, split, official, device, drop_duplicates, data, ground_truth)
    draw_curves(result)
    return result


def load(run_dir: str | Path, device: str = "auto") -> Detector:
    """The selected generator of a finished (or validated) run, or a model exported to ONNX, ready to score."""
    from .inference import Detector

    return Detector.open(run_dir, device)
