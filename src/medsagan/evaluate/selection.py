"""Model selection without test labels: a validation AUC, labelled or label-free (AUCp)."""

import numpy as np

from ..data.dataset import TrainingData
from ..models import AnomalyDetector
from .metrics import auc
from .scoring import score_images

METRIC_NAMES = {
    "labelled": "val/auc",
    "aucp": "val/aucp",
    "aucp_heldout": "val/aucp",
}
DESCRIPTIONS = {
    "labelled": "AUC on the labelled validation split",
    "aucp": "AUCp: held-out labelled normals against the unlabelled training images (label-free)",
    "aucp_heldout": "AUCp: held-out labelled normals against held-out unlabelled images (label-free, never trained on)",
    "none": "no validation data: the last iteration",
}


def validation_metric(detector: AnomalyDetector, data: TrainingData) -> tuple[str, float] | None:
    """(name, value) of the selection metric, higher is better; None when the run has no validation data."""
    if data.validation == "none":
        return None
    negative = score_images(detector, data.val_normal.images).scores
    positive = score_images(detector, data.val_positive.images).scores
    labels = np.r_[np.zeros(len(negative)), np.ones(len(positive))]
    return METRIC_NAMES[data.validation], auc(labels, np.r_[negative, positive])
