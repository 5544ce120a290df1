"""Restorations and anomaly maps of the same test images under several runs, side by side, as one figure.

    python benchmarks/before_after.py preset=RUN_A changed=RUN_B --out docs/restorations.png [--count 3]

Each run restores the first COUNT normal and the first COUNT abnormal images of its test split (the runs must
share their data). Rows are images; per run, two columns: the restored image and its map over the input, on
that run's own colour scale (its calibration's, fitted on held-out normals). Each restored image is captioned
with its PSNR against the input, which is what the speckle costs.
"""

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import torch
from localisation import test_split
from skimage.metrics import peak_signal_noise_ratio

from medsagan.data.dataset import to_model_range
from medsagan.inference import Detector
from medsagan.viz.heatmaps import overlay, to_rgb

matplotlib.use("Agg")
from matplotlib import pyplot


def test_images(model: Detector, run: str, count: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first `count` normal and abnormal test images of a run, as uint8 [N, C, S, S], and their labels."""
    split = test_split(model, run)
    labels = np.asarray(split.labels)
    picked = np.concatenate([np.flatnonzero(labels == label)[:count] for label in (0, 1)])
    return split.images[picked], labels[picked]


def figure(runs: dict[str, str], count: int, out: Path) -> None:
    """Draw the grid and save it as PNG."""
    models = {label: Detector.open(run, "cpu") for label, run in runs.items()}
    first = next(iter(runs))
    images, labels = test_images(models[first], runs[first], count)
    rows, columns = len(images), 1 + 2 * len(runs)
    fig, axes = pyplot.subplots(rows, columns, figsize=(1.6 * columns, 1.7 * rows), squeeze=False)
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
        x = to_model_range(image).numpy()
        axes[row, 0].imshow(to_rgb(x), interpolation="nearest")
        axes[row, 0].set_title("input, " + ("abnormal" if label else "normal"), fontsize=7)
        for k, (name, model) in enumerate(models.items()):
            scored = model.score(image[None])
            restored = scored.restored[0]
            psnr = peak_signal_noise_ratio(x, restored, data_range=2.0)
            heading = f"{name}\n" if row == 0 else ""
            axes[row, 1 + 2 * k].imshow(to_rgb(restored), interpolation="nearest")
            axes[row, 1 + 2 * k].set_title(f"{heading}restored, {psnr:.1f} dB", fontsize=7)
            vmax = model.heatmap_vmax or float(scored.maps.max())
            axes[row, 2 + 2 * k].imshow(overlay(x, scored.maps[0], vmax), interpolation="nearest")
            axes[row, 2 + 2 * k].set_title(f"{heading}map, score {scored.scores[0]:.3f}", fontsize=7)
    for axis in axes.flat:
        axis.set_axis_off()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, in the order of the columns")
    parser.add_argument("--count", type=int, default=3, help="normal and abnormal test images each")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not all("=" in item for item in args.runs):
        parser.error("give each run as LABEL=RUN_DIR, for example preset=runs/a")
    figure(dict(item.split("=", 1) for item in args.runs), args.count, args.out)


if __name__ == "__main__":
    main()
