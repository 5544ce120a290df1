"""Decision thresholds fitted on validation data, never on the test set, and saved with the run."""

import numpy as np
from sklearn.metrics import roc_curve

from ..records import Threshold


def verdict(score: float, threshold: float) -> str:
    """The decision rule every command uses: a score at or above the threshold is abnormal."""
    return "abnormal" if score >= threshold else "normal"


def youden(normal: np.ndarray, abnormal: np.ndarray, fitted_on: str) -> Threshold:
    """The ROC point that maximises sensitivity + specificity - 1 on labelled validation images."""
    labels = np.r_[np.zeros(len(normal)), np.ones(len(abnormal))]
    fpr, tpr, cuts = roc_curve(labels, np.r_[normal, abnormal])
    best = int(np.argmax(tpr - fpr))
    value = float(min(cuts[best], np.max(np.r_[normal, abnormal])))
    return Threshold(value, "youden", fitted_on, len(normal), len(abnormal))


def normal_quantile(normal: np.ndarray, specificity: float, fitted_on: str) -> Threshold:
    """Label-free: the score below which `specificity` of the held-out normals fall (no abnormal needed)."""
    value = float(np.quantile(normal, specificity, method="higher"))
    return Threshold(value, f"normal-quantile-{specificity:g}", fitted_on, len(normal), 0)
