"""Does the anomaly map point at the lesion? Pixel-level metrics against ground-truth masks.

Every test image takes part: a normal image's pixels are all negatives, an abnormal image's mask marks its
positives. An abnormal image without ground truth (a box file that does not list it) is left out and
counted. The metrics:
- pixel AUROC over every pixel of every image (scikit-learn's roc_auc_score);
- AUPRO: the per-region overlap, averaged over the connected regions of the masks (scipy.ndimage.label),
  integrated over the false-positive rate up to 0.3 and divided by 0.3, as MVTec AD defines it;
- the pointing game: the share of abnormal images whose map is brightest inside their mask;
- Dice and IoU per abnormal image of the map thresholded at a pixel threshold fitted on normals only (the
  run's heatmap scale: that quantile of held-out normal pixels), averaged over the images.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from ..errors import DataError

FPR_LIMIT = 0.3  # MVTec AD's integration limit for AUPRO
THRESHOLDS = 1000  # thresholds of the PRO curve (quantiles of the map values)


@dataclass(frozen=True)
class Localisation:
    """Pixel-level metrics of a split whose ground truth is known; None where a metric is undefined."""

    pixel_auroc: float
    aupro: float
    pointing_game: float
    dice: float | None
    iou: float | None
    pixel_threshold: float | None
    images_with_ground_truth: int
    regions: int
    abnormal_without_ground_truth: int

    def to_dict(self) -> dict:
        """metrics.json's "localisation" record."""
        return asdict(self)


def lesion_regions(maps: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
    """The sorted map values of each connected region of each mask."""
    regions = []
    for amap, mask in zip(maps, masks, strict=True):
        labelled, count = ndimage.label(mask)
        regions += [np.sort(amap[labelled == k]) for k in range(1, count + 1)]
    return regions


def pro_curve(
    maps: np.ndarray, masks: np.ndarray, regions: list[np.ndarray] | None = None, thresholds: int = THRESHOLDS
) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rates, per-region overlaps) at thresholds from the highest map value down.

    `maps` float [N, S, S]; `masks` bool [N, S, S]; `regions` their lesion_regions, when already found. The
    overlap of a region is the share of its pixels at or above the threshold; the curve's value is their mean
    over every connected region of every mask.
    """
    negatives = np.sort(maps[~masks])
    regions = lesion_regions(maps, masks) if regions is None else regions
    if not regions or not negatives.size:
        raise DataError("localisation needs both lesion pixels and normal pixels in the ground truth")
    cuts = np.unique(np.quantile(maps, np.linspace(0, 1, thresholds)))[::-1]
    above = lambda values: 1 - np.searchsorted(values, cuts, side="left") / values.size  # noqa: E731
    fpr = above(negatives)
    pro = np.mean([above(region) for region in regions], axis=0)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])


def aupro(
    maps: np.ndarray, masks: np.ndarray, limit: float = FPR_LIMIT, regions: list[np.ndarray] | None = None
) -> float:
    """Area under the PRO curve up to `limit` false-positive rate, divided by `limit` (1 is perfect)."""
    fpr, pro = pro_curve(maps, masks, regions)
    kept = fpr <= limit
    x, y = fpr[kept], pro[kept]
    if x[-1] < limit:  # the point at the limit, interpolated between its neighbours on the curve
        x, y = np.append(x, limit), np.append(y, np.interp(limit, fpr, pro))
    return float(auc(x, y) / limit)


def localisation(
    maps: np.ndarray, masks: np.ndarray, has_truth: np.ndarray, labels: np.ndarray, pixel_threshold: float | None
) -> Localisation:
    """Metrics of anomaly `maps` [N, S, S] against `masks` [N, S, S] (False everywhere on normal images).

    `has_truth`: which images have ground truth (every normal; the abnormal images a mask or box names).
    """
    if maps.shape != masks.shape:
        raise DataError(f"{masks.shape[1:]} masks do not match {maps.shape[1:]} anomaly maps")
    maps, masks, labels = maps[has_truth], masks[has_truth].astype(bool), labels[has_truth]
    abnormal = labels == 1
    if not masks[abnormal].any(axis=(1, 2)).all():
        raise DataError("an abnormal image's ground truth marks no pixel; give it a mask or box, or leave it out")
    pixel_auroc = float(roc_auc_score(masks.ravel(), maps.ravel()))
    peaks = maps[abnormal].reshape(abnormal.sum(), -1).argmax(axis=1)
    pointing = float(masks[abnormal].reshape(abnormal.sum(), -1)[np.arange(len(peaks)), peaks].mean())
    dice = iou = None
    if pixel_threshold is not None:
        predicted, truth = maps[abnormal] >= pixel_threshold, masks[abnormal]
        overlap = (predicted & truth).sum(axis=(1, 2))
        dice = float(np.mean(2 * overlap / (predicted.sum(axis=(1, 2)) + truth.sum(axis=(1, 2)))))
        iou = float(np.mean(overlap / (predicted | truth).sum(axis=(1, 2))))
    regions = lesion_regions(maps, masks)  # normal images have none
    return Localisation(
        pixel_auroc=pixel_auroc,
        aupro=aupro(maps, masks, regions=regions),
        pointing_game=pointing,
        dice=dice,
        iou=iou,
        pixel_threshold=pixel_threshold,
        images_with_ground_truth=int(abnormal.sum()),
        regions=len(regions),
        abnormal_without_ground_truth=int(len(has_truth) - has_truth.sum()),
    )


def top_region(amap: np.ndarray) -> tuple[float, float, float, float]:
    """Where a map points: the box (x0, y0, x1, y1, as shares of the width and height) of its brightest region.

    The region: the pixels connected to the brightest one that lie above half its height over the map's median.
    """
    height, width = amap.shape
    peak = np.unravel_index(int(np.argmax(amap)), amap.shape)
    floor = float(np.median(amap))
    labelled, _ = ndimage.label(amap >= floor + 0.5 * (amap[peak] - floor))
    rows, cols = np.nonzero(labelled == labelled[peak])
    return cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height
