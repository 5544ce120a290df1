"""Anomaly-map aggregation study: which way of turning a map into one score separates best, chosen label-free.

    python benchmarks/aggregation.py RUN [RUN ...]

For a finished run's chosen weights (best.pt), scores the held-out normals, the held-out unlabelled images and
the test split once each, keeping the maps, then aggregates every map several ways: the paper's mean, the mean
of the top k % of pixels, and the same after a Gaussian blur. For each aggregation it reports AUCp (held-out
normals against held-out unlabelled images, the run's own selection data) and test AUC / AP. The aggregation a
user could choose is the one with the best AUCp; the test figures are only there to say whether that choice
would have helped. Writes aggregation.json in the run folder.
"""

import json
from pathlib import Path

import numpy as np
import torch

from medsagan.data.dataset import build_training_data, load_split, without_duplicates
from medsagan.data.sources import open_source
from medsagan.evaluate.metrics import auc, average_precision
from medsagan.evaluate.scoring import score_images
from medsagan.files import atomic_write_text
from medsagan.models.detector import GaussianBlur
from medsagan.runs import RunDir, load_detector

TOP_FRACTIONS = (1.0, 0.25, 0.1, 0.05, 0.01)
BLUR_SIGMAS = (0.0, 1.0, 2.0, 4.0)


def blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of [N, S, S] maps: the detector's own (model.map_sigma), mirrored at the border."""
    if sigma == 0:
        return maps
    with torch.no_grad():
        return GaussianBlur(sigma, maps.shape[-1])(torch.from_numpy(maps).float()[:, None])[:, 0].numpy()


def aggregate(maps: np.ndarray, sigma: float, fraction: float) -> np.ndarray:
    """Mean of the top `fraction` of each (blurred) map's pixels; fraction 1 is the plain mean."""
    flat = blur(maps, sigma).reshape(len(maps), -1)
    k = max(1, round(fraction * flat.shape[1]))
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def study(run_dir: str | Path) -> dict:
    run = RunDir(run_dir)
    cfg = run.load_config()
    source = open_source(cfg)
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    detector, _, selection = load_detector(run_dir, device="cpu")
    maps = lambda images: score_images(detector, images, keep_maps=True).maps  # noqa: E731
    negative, positive = maps(data.val_normal.images), maps(data.val_positive.images)
    test, _ = without_duplicates(load_split(source, "test", cfg, run.cache_dir(cfg)), run.load_digests() or {})
    labels, test_maps = test.labels.numpy(), maps(test.images)
    rows = []
    for sigma in BLUR_SIGMAS:
        for fraction in TOP_FRACTIONS:
            low, high = aggregate(negative, sigma, fraction), aggregate(positive, sigma, fraction)
            scores = aggregate(test_maps, sigma, fraction)
            rows.append(
                {
                    "sigma": sigma,
                    "top_fraction": fraction,
                    "validation": auc(np.r_[np.zeros(len(low)), np.ones(len(high))], np.r_[low, high]),
                    "test_auc": auc(labels, scores),
                    "test_ap": average_precision(labels, scores),
                }
            )
    chosen = max(rows, key=lambda r: r["validation"])
    result = {"validation": data.validation, "iteration": selection.iteration, "rows": rows, "chosen": chosen}
    atomic_write_text(run.path / "aggregation.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    for run_dir in args.runs:
        found = study(run_dir)
        print(f"{run_dir} ({found['validation']}, iteration {found['iteration']})")
        print("sigma top% validation test_auc test_ap")
        for r in found["rows"]:
            mark = " <- chosen" if r is found["chosen"] else ""
            print(
                f"{r['sigma']:5.1f} {100 * r['top_fraction']:4.0f} {r['validation']:.3f} "
                f"{r['test_auc']:.3f} {r['test_ap']:.3f}{mark}"
            )
