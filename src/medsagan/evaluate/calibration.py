"""Calibration of a trained detector on validation data: its decision threshold and heatmap colour scale."""

import numpy as np
import torch

from ..config import EvaluationConfig
from ..data.dataset import TrainingData
from ..models import AnomalyDetector
from ..records import Calibration, Selection
from .scoring import score_images
from .thresholds import normal_quantile, youden

HEATMAP_QUANTILE = 0.999  # the colour scale tops out at this quantile of the validation normals' map pixels


def held_out_normals(data: TrainingData):
    """The normals calibration fits on: the held-out ones, else the training normals."""
    return data.val_normal if data.val_normal is not None else data.normal


def fit_reference(detector: AnomalyDetector, data: TrainingData) -> torch.Tensor:
    """The mean anomaly map [1, S, S] of the held-out normals, by the detector as it is without a reference."""
    if detector.reference is not None:
        raise ValueError("fit_reference needs a detector without a reference")
    maps = score_images(detector, held_out_normals(data).images, keep_maps=True).maps
    return torch.from_numpy(maps.mean(axis=0, dtype=np.float64).astype(np.float32))[None]


def calibrate(
    detector: AnomalyDetector, data: TrainingData, cfg: EvaluationConfig, selection: Selection
) -> Calibration:
    """Youden's J on a labelled validation split, else a quantile of held-out (or training) normals."""
    normals = held_out_normals(data)
    fitted_on = {
        "aucp": "held-out labelled normals",
        "aucp_heldout": "held-out labelled normals",
        "labelled": "labelled validation split",
        "none": "training normals (no validation data)",
    }[data.validation]
    scored = score_images(detector, normals.images, keep_maps=True)
    if data.validation == "labelled":
        positive = score_images(detector, data.val_positive.images).scores
        threshold = youden(scored.scores, positive, fitted_on)
    else:
        threshold = normal_quantile(scored.scores, cfg.threshold_specificity, fitted_on)
    vmax = float(np.quantile(scored.maps, HEATMAP_QUANTILE))
    rule = f"{HEATMAP_QUANTILE * 100:g}th percentile of anomaly-map pixels of the {fitted_on}"
    return Calibration(threshold, vmax, rule, selection)
