"""Image-level metrics from scikit-learn, abnormal = positive class (as the paper and the official code)."""

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from ..errors import DataError


def _check(labels: np.ndarray) -> None:
    classes = set(np.unique(labels).tolist())
    if classes != {0, 1}:
        raise DataError(f"AUC and AP need both normal and abnormal images; the labels hold only {sorted(classes)}")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (sklearn roc_auc_score)."""
    _check(labels)
    return float(roc_auc_score(labels, scores))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP as sklearn average_precision_score (step-wise, not the trapezoidal AUPR)."""
    _check(labels)
    return float(average_precision_score(labels, scores))


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Sensitivity, specificity, precision and F1 when score >= threshold means abnormal."""
    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel().tolist()
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": precision,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def summary(labels: np.ndarray, scores: np.ndarray) -> dict[str, float | int]:
    """AUC, AP and the class counts of one scored split."""
    return {
        "auc": auc(labels, scores),
        "ap": average_precision(labels, scores),
        "n_normal": int((labels == 0).sum()),
        "n_abnormal": int((labels == 1).sum()),
    }
