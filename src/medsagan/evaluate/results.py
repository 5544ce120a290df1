"""`evaluate`: score a run's split, compute AUC/AP, write metrics.json and scores.csv.

The figures are drawn by viz (viz.plots.draw_curves), which reads the result; evaluation never draws. A
finished evaluation is recognised by the stamp of the weights it scored, so the report reuses it.
"""

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.dataset import build_training_data, check_leakage, load_split, without_duplicates
from ..data.sources import open_source
from ..errors import DataError, MedsaganError
from ..files import atomic_write_text
from ..records import Calibration, Selection
from ..runs import RunDir, load_detector
from .ground_truth import GroundTruth, with_normals
from .localisation import localisation
from .metrics import at_threshold, summary
from .scoring import OFFICIAL_NOTE, score_images
from .thresholds import verdict

DETERMINISTIC_NOTE = "eval mode under torch.inference_mode(): no random mask, deterministic, per-image"
SCORE_NOTE = "mean over the image of |x - x'| / 2 (paper's L1 discrepancy, official solver.py)"
METRICS_NOTE = "scikit-learn roc_auc_score and average_precision_score, abnormal = positive"


@dataclass
class EvalResult:
    """A split's metrics and how they were obtained (metrics.json), with the per-image scores behind them."""

    split: str
    auc: float
    ap: float
    n_normal: int
    n_abnormal: int
    checkpoint: Selection
    calibration: Calibration | None
    at_threshold: dict[str, float | int] | None
    scoring: str
    skipped_images: list[str]
    output: Path
    dropped_duplicates: list[str]
    ids: list[str] = field(repr=False)
    paths: list[str] = field(repr=False)
    labels: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    localisation: dict[str, Any] | None = None  # pixel-level metrics, where the lesions are known

    @property
    def threshold(self) -> float | None:
        """The calibrated threshold the metrics at_threshold used, if any."""
        return self.calibration.threshold.value if self.calibration else None

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's layout."""
        metrics: dict[str, Any] = {
            "split": self.split,
            "auc": self.auc,
            "ap": self.ap,
            "n_normal": self.n_normal,
            "n_abnormal": self.n_abnormal,
        }
        if self.calibration is not None:
            metrics["at_threshold"] = {"threshold": self.calibration.threshold.to_dict(), **self.at_threshold}
        metrics.update(
            {
                "checkpoint": self.checkpoint.to_dict(),
                "scoring": self.scoring,
                "score": SCORE_NOTE,
                "metrics_from": METRICS_NOTE,
                "skipped_images": self.skipped_images,
                "dropped_duplicates": self.dropped_duplicates,
                "output": str(self.output),
            }
        )
        if self.calibration is not None and self.calibration.separation is not None:
            metrics["separation"] = self.calibration.separation.to_dict()
        if self.localisation is not None:
            metrics["localisation"] = self.localisation
        return metrics

    @classmethod
    def from_saved(
        cls, metrics: dict[str, Any], rows: list[dict[str, str]], calibration: Calibration | None, output: Path
    ) -> "EvalResult":
        """A finished evaluation read back: metrics.json's record and scores.csv's rows."""
        stored = metrics.get("at_threshold")
        return cls(
            split=metrics["split"],
            auc=metrics["auc"],
            ap=metrics["ap"],
            n_normal=metrics["n_normal"],
            n_abnormal=metrics["n_abnormal"],
            checkpoint=Selection.from_dict(metrics["checkpoint"]),
            calibration=calibration,
            at_threshold={k: v for k, v in stored.items() if k != "threshold"} if stored else None,
            scoring=metrics["scoring"],
            skipped_images=list(metrics["skipped_images"]),
            dropped_duplicates=list(metrics["dropped_duplicates"]),
            output=output,
            ids=[spreadsheet_text(row["id"]) for row in rows],
            paths=[spreadsheet_text(row["path"]) for row in rows],
            labels=np.array([int(row["label"]) for row in rows]),
            scores=np.array([float(row["score"]) for row in rows]),
            localisation=metrics.get("localisation"),
        )


def training_pool_digests(source, cfg, cache) -> dict[str, str]:
    """Digest -> id of what a run that recorded no training digests may have trained on.

    Its drawn training data where the run's settings can draw it from this dataset, else every image of the
    training pools: a stricter check, for a run trained elsewhere (an imported official checkpoint) whose
    draw is unknown.
    """
    try:
        return build_training_data(source, cfg, cache).digests()
    except DataError:
        ids = [item for key, items in source.pools.items() if key.startswith("train") for item in items]
        return {source.digest(item): item for item in ids}


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    official: bool = False,
    device: str = "auto",
    drop_duplicates: bool = False,
    data: str | Path | None = None,
    ground_truth: GroundTruth | None = None,
) -> EvalResult:
    """Score `split` ("test" or "val") with the run's selected generator; metrics written under RUN/evaluation/.

    `data`: where the run's dataset lives now, when it has moved since training (its images are checked against
    the run's saved digests as always).

    An image of `split` whose bytes equal a training or validation image's is an error, or with
    `drop_duplicates` left out of the metrics and listed in metrics.json (public files such as MedMNIST's
    hold a few such copies).
    """
    run = RunDir(run_dir)
    detector, cfg, selection = load_detector(run.path, device)
    if data is not None:
        cfg = cfg.replace(data={"path": str(data)}).with_absolute_paths()
    cache = run.cache_dir(cfg)
    source = open_source(cfg)
    images = load_split(source, split, cfg, cache)
    skipped = images.skipped
    training = run.load_digests()
    if training is None:  # an imported run, or one of an older version: it did not record what it trained on
        training = training_pool_digests(source, cfg, cache)
    dropped = []
    if drop_duplicates:
        images, dropped = without_duplicates(images, training)
    else:
        check_leakage(dict(zip(images.digests, images.paths, strict=True)), training)

    # Lesion ground truth, given or known to the source, is read (and refused) before anything is scored.
    labels = images.labels.numpy()
    if ground_truth is not None:
        masks, has_truth = ground_truth.load(images.paths, cfg.model.image_size)
    else:
        masks, has_truth = source.lesion_masks(images.ids), np.ones(len(images.ids), dtype=bool)
    if masks is not None:
        has_truth = with_normals(masks, has_truth, labels, images.paths)
    scored = score_images(detector, images.images, keep_maps=masks is not None, official=official)
    scores = scored.scores
    calibration = run.load_calibration(selection)
    localised = None
    if masks is not None:
        pixel_threshold = calibration.heatmap_vmax if calibration else None
        localised = localisation(scored.maps, masks, has_truth, labels, pixel_threshold).to_dict()
    counts = summary(labels, scores)
    result = EvalResult(
        split=split,
        auc=counts["auc"],
        ap=counts["ap"],
        n_normal=counts["n_normal"],
        n_abnormal=counts["n_abnormal"],
        checkpoint=selection,
        calibration=calibration,
        at_threshold=at_threshold(labels, scores, calibration.threshold.value) if calibration else None,
        scoring=OFFICIAL_NOTE if official else DETERMINISTIC_NOTE,
        skipped_images=skipped,
        dropped_duplicates=dropped,
        output=run.evaluation(f"{split}-official" if official else split),
        ids=images.ids,
        paths=images.paths,
        labels=labels,
        scores=scores,
        localisation=localised,
    )
    atomic_write_text(
        result.output / "scores.csv", scores_csv(images.ids, images.paths, labels, scores, result.threshold)
    )
    metrics = {**result.to_dict(), "weights": weights_stamp(run)}
    atomic_write_text(result.output / "metrics.json", json.dumps(metrics, indent=1))  # last: marks it finished
    return result


def weights_stamp(run: RunDir) -> str:
    """Identity of the run's chosen weights as they are now: best.pt's size and modification time."""
    stat = run.best.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def finished_evaluation(run_dir: str | Path, split: str = "test") -> EvalResult | None:
    """The evaluation of `split` already written for the run's current weights and calibration, or None."""
    run = RunDir(run_dir)
    output = run.evaluation(split)
    try:
        metrics = json.loads((output / "metrics.json").read_text())
        with open(output / "scores.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        selection = Selection.from_dict(metrics["checkpoint"])
        if metrics.get("weights") != weights_stamp(run) or metrics.get("scoring") != DETERMINISTIC_NOTE:
            return None
        calibration = run.load_calibration(selection)
        fitted = (metrics.get("at_threshold") or {}).get("threshold")
        if fitted != (calibration.threshold.to_dict() if calibration else None):
            return None
        return EvalResult.from_saved(metrics, rows, calibration, output)
    except (OSError, ValueError, KeyError, TypeError, MedsaganError):
        return None


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, -, @, tab or CR would start a formula (OWASP)."""
    return "'" + text if text[:1] in FORMULA_STARTS else text


def spreadsheet_text(cell: str) -> str:
    """The text `spreadsheet_safe` protected."""
    return cell[1:] if cell[:1] == "'" and cell[1:2] in FORMULA_STARTS else cell


def scores_csv(
    ids: list[str],
    paths: list[str],
    labels: np.ndarray | None,
    scores: np.ndarray,
    threshold: float | None,
    where: list[tuple[float, float, float, float]] | None = None,
) -> str:
    """One row per image: id, path, label (when known), score, prediction (when there is a threshold).

    `where`: the box of each map's brightest region (x0, y0, x1, y1 as shares of the width and height), as
    four more columns.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["id", "path"] + (["label"] if labels is not None else []) + ["score"]
    header += ["prediction"] if threshold is not None else []
    header += ["where_x0", "where_y0", "where_x1", "where_y1"] if where else []
    writer.writerow(header)
    for i, (item, path, score) in enumerate(zip(ids, paths, scores, strict=True)):
        label = [int(labels[i])] if labels is not None else []
        row = [spreadsheet_safe(item), spreadsheet_safe(path), *label, f"{score:.8g}"]
        if threshold is not None:
            row.append(verdict(score, threshold))
        if where:
            row += [f"{v:.4f}" for v in where[i]]
        writer.writerow(row)
    return buffer.getvalue()
