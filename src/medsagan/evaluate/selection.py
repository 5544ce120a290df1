"""Model selection without test labels: a validation AUC, labelled or label-free, and pseudo-anomaly AUC.

With 20 + 20 held-out images the label-free AUCp swings by chance from one validation to the next. A second
label-free signal needs no unlabelled images at all: held-out normals against pseudo-anomalies made once
from them (the run's own recipe, fixed draws), which asks whether the generator still leaves normals alone
and still restores a foreign patch. `evaluation.select_by` picks the signal; every validation logs them all.
"""

import numpy as np
import torch

from ..config import Config
from ..data.dataset import TrainingData, to_model_range, to_uint8
from ..errors import ConfigError
from ..models import AnomalyDetector
from ..pseudo_anomalies import configured_pseudo_anomalies, other_images
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
PSEUDO = "val/pseudo"
COMBINED = "val/combined"
PSEUDO_DESCRIPTION = "held-out labelled normals against pseudo-anomalies made from them (label-free)"
PSEUDO_SEED = 20240607  # fixed, so every validation of a run (and every run) scores the same pseudo-anomalies


def describe(kind: str, select_by: str) -> str:
    """What a run of validation `kind` selects on, in words."""
    if kind == "none" or select_by == "validation":
        return DESCRIPTIONS[kind]
    if select_by == "pseudo":
        return f"AUC of {PSEUDO_DESCRIPTION}"
    return f"mean of {DESCRIPTIONS[kind].split(':')[0]} and the AUC of {PSEUDO_DESCRIPTION}"


def selection_key(kind: str, select_by: str) -> str | None:
    """The logged signal that selection maximises; None without validation data."""
    if kind == "none":
        return None
    return {"validation": METRIC_NAMES[kind], "pseudo": PSEUDO, "combined": COMBINED}[select_by]


def pseudo_validation(data: TrainingData, cfg: Config) -> torch.Tensor | None:
    """uint8 pseudo-anomalies made once from the held-out normals, each with a patch of another one."""
    if data.validation == "none" or data.val_normal is None or len(data.val_normal) < 2:
        return None
    rng = torch.Generator().manual_seed(PSEUDO_SEED)
    normals = to_model_range(data.val_normal.images)
    sources = other_images(normals, rng) if cfg.loss.pseudo_anomaly == "fpi" else None
    pseudo, _ = configured_pseudo_anomalies(cfg.loss, normals, rng, sources)
    return torch.from_numpy(to_uint8(pseudo.numpy()))


def validation_signals(
    detector: AnomalyDetector, data: TrainingData, pseudo: torch.Tensor | None = None
) -> dict[str, float]:
    """Every selection signal this run's data allows, by logged name; empty without validation data."""
    if data.validation == "none":
        return {}
    negative = score_images(detector, data.val_normal.images).scores
    positive = score_images(detector, data.val_positive.images).scores
    against = lambda scores: auc(np.r_[np.zeros(len(negative)), np.ones(len(scores))], np.r_[negative, scores])  # noqa: E731
    signals = {METRIC_NAMES[data.validation]: against(positive)}
    if pseudo is not None:
        signals[PSEUDO] = against(score_images(detector, pseudo).scores)
        signals[COMBINED] = (signals[PSEUDO] + signals[METRIC_NAMES[data.validation]]) / 2
    return signals


def validation_metric(
    detector: AnomalyDetector, data: TrainingData, select_by: str = "validation", pseudo: torch.Tensor | None = None
) -> tuple[tuple[str, float] | None, dict[str, float]]:
    """((name, value) of the selection signal, higher is better, or None without validation data; all signals)."""
    name = selection_key(data.validation, select_by)
    if name in (PSEUDO, COMBINED) and pseudo is None:
        raise ConfigError(
            f"evaluation.select_by = {select_by!r} needs at least 2 held-out normals to make pseudo-anomalies "
            "from; raise data.val_fraction or use select_by=validation"
        )
    signals = validation_signals(detector, data, pseudo)
    return ((name, signals[name]) if name is not None else None), signals
