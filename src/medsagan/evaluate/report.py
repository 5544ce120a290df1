"""`evaluate`: score a run's split, compute AUC/AP, write metrics.json, scores.csv and a figure."""

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..data.dataset import build_training_data, check_leakage, load_split
from ..data.sources import open_source
from ..files import atomic_write_text
from ..runs import cache_dir, load_calibration, load_detector
from ..viz.plots import evaluation_figure
from .metrics import at_threshold, summary
from .scoring import OFFICIAL_NOTE, score_images

DETERMINISTIC_NOTE = "eval mode under torch.inference_mode(): no random mask, deterministic, per-image"


def evaluate_run(run_dir: str | Path, split: str = "test", official: bool = False, device: str = "auto") -> dict:
    """Score `split` ("test" or "val") with the run's selected generator; returns the metrics object."""
    run_dir = Path(run_dir)
    detector, cfg, selection = load_detector(run_dir, device)
    cache = cache_dir(cfg, run_dir)
    source = open_source(
        cfg.data.path, cfg.data.source, cfg.data.medmnist_task, cfg.data.synthetic_count, cfg.model.image_size
    )
    images = load_split(source, split, cfg.model, cfg.data.skip_bad, cache)
    training = build_training_data(source, cfg.data, cfg.model, cfg.train.seed, cfg.train.val_max_images, cache)
    check_leakage(images, [training.normal, training.unlabeled])

    scores = score_images(detector, images.images, official=official).scores
    labels = images.labels.numpy()
    metrics = {"split": split, **summary(labels, scores)}
    calibration = load_calibration(run_dir, selection)
    threshold = calibration["threshold"] if calibration else None
    if threshold:
        metrics["at_threshold"] = {"threshold": threshold, **at_threshold(labels, scores, threshold["value"])}
    metrics["checkpoint"] = selection
    metrics["scoring"] = OFFICIAL_NOTE if official else DETERMINISTIC_NOTE
    metrics["score"] = "mean over the image of |x - x'| / 2 (paper's L1 discrepancy, official solver.py)"
    metrics["metrics_from"] = "scikit-learn roc_auc_score and average_precision_score, abnormal = positive"
    metrics["skipped_images"] = images.skipped

    out = run_dir / "evaluation" / (f"{split}-official" if official else split)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    atomic_write_text(
        out / "scores.csv",
        scores_csv(images.ids, images.paths, labels, scores, threshold["value"] if threshold else None),
    )
    evaluation_figure(labels, scores, metrics, threshold["value"] if threshold else None, out / "curves.png")
    metrics["output"] = str(out)
    return metrics


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR would start a formula (OWASP)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def scores_csv(
    ids: list[str], paths: list[str], labels: np.ndarray | None, scores: np.ndarray, threshold: float | None
) -> str:
    """One row per image: id, path, label (when known), score, prediction (when there is a threshold)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["id", "path"] + (["label"] if labels is not None else []) + ["score"]
    writer.writerow(header + (["prediction"] if threshold is not None else []))
    for i, (item, path, score) in enumerate(zip(ids, paths, scores, strict=True)):
        row = (
            [spreadsheet_safe(item), spreadsheet_safe(path)]
            + ([int(labels[i])] if labels is not None else [])
            + [f"{score:.8g}"]
        )
        if threshold is not None:
            row.append("abnormal" if score >= threshold else "normal")
        writer.writerow(row)
    return buffer.getvalue()
