"""Calibration of a trained detector on validation data: its decision threshold and heatmap colour scale."""

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from ..config import EvaluationConfig
from ..data.dataset import TrainingData
from ..models import AnomalyDetector
from ..records import Calibration, Selection, Separation
from .scoring import Scores, score_images
from .thresholds import normal_quantile, youden

HEATMAP_QUANTILE = 0.999  # the colour scale tops out at this quantile of the validation normals' map pixels
POSITIVES = {
    "labelled": "labelled abnormal images of the val split",
    "aucp_heldout": "held-out unlabelled images",
    "aucp": "unlabelled training images",
}


def held_out_normals(data: TrainingData):
    """The normals calibration fits on: the held-out ones, else the training normals."""
    return data.val_normal if data.val_normal is not None else data.normal


def fit_reference(detector: AnomalyDetector, data: TrainingData) -> tuple[torch.Tensor, Scores]:
    """The held-out normals' mean anomaly map [1, S, S], by the detector as it is without a reference.

    Also returns those normals scored as the detector with the reference scores them (maps less the
    reference), so calibration needs no second pass over them.
    """
    if detector.reference is not None:
        raise ValueError("fit_reference needs a detector without a reference")
    scored = score_images(detector, held_out_normals(data).images, keep_maps=True)
    reference = scored.maps.mean(axis=0, dtype=np.float64).astype(np.float32)
    return torch.from_numpy(reference)[None], Scores(scored.scores, scored.maps - reference, scored.restored)


def calibrate(
    detector: AnomalyDetector,
    data: TrainingData,
    cfg: EvaluationConfig,
    selection: Selection,
    normals_scored: Scores | None = None,
) -> Calibration:
    """Youden's J on a labelled validation split, else a quantile of held-out (or training) normals.

    `normals_scored`: the held-out normals already scored by this detector, maps kept (from `fit_reference`).
    """
    normals = held_out_normals(data)
    fitted_on = {
        "aucp": "held-out labelled normals",
        "aucp_heldout": "held-out labelled normals",
        "labelled": "labelled validation split",
        "none": "training normals (no validation data)",
    }[data.validation]
    scored = normals_scored or score_images(detector, normals.images, keep_maps=True)
    positive = None
    if data.validation in POSITIVES and data.val_positive is not None and len(data.val_positive):
        positive = score_images(detector, data.val_positive.images).scores
    if data.validation == "labelled":
        threshold = youden(scored.scores, positive, fitted_on)
    else:
        threshold = normal_quantile(scored.scores, cfg.threshold_specificity, fitted_on)
    vmax = float(np.quantile(scored.maps, HEATMAP_QUANTILE))
    rule = f"{HEATMAP_QUANTILE * 100:g}th percentile of anomaly-map pixels of the {fitted_on}"
    separation = None if positive is None else separation_of(scored.scores, positive, POSITIVES[data.validation])
    return Calibration(threshold, vmax, rule, selection, separation)


def separation_of(normal: np.ndarray, positive: np.ndarray, positives: str) -> Separation:
    """The validation sets' AUC at these scores, and the one-sided Mann-Whitney chance of one as high."""
    test = mannwhitneyu(positive, normal, alternative="greater")
    auc = float(test.statistic) / (len(positive) * len(normal))
    return Separation(auc, float(test.pvalue), len(normal), len(positive), positives)
