"""Localisation on real anatomy, and how much of a normal image the restoration keeps, on a run's test normals.

    python benchmarks/localisation.py RUN [RUN ...] [--seed 0] [--images test|dev] [--markdown]

Half of the run's test normals (every other one) get a patch of another test normal blended in, as training
makes pseudo-anomalies (the run's own FPI settings, a fixed seed); the other half stay as they are. All are
scored with the run's selected generator, and the maps are measured against the blended boxes (pixel AUROC,
AUPRO, pointing game, Dice and IoU at the run's heatmap scale), with the image-level AUC of blended against
untouched normals. On the untouched normals it also measures the restoration (scikit-image): PSNR and SSIM
of restored against input, and the share of the anomaly map's sum (of its positive part, where the map is
less a reference) that lies inside the body (Otsu's threshold of the input, its holes filled). Test normals
only: no abnormal test image and no test label beyond "normal" is read. Prints one JSON object per run (and a
Markdown row with --markdown).

To compare settings, use `--images dev`: the same measures on the unlabelled-pool normals a Med-AD run never
trained or selected on (benchmarks/devset.py's development normals), so that no test image chooses anything.
"""

import argparse
import json

import numpy as np
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.metrics import roc_auc_score

from medsagan.data.dataset import ImageSet, load_split, to_model_range, to_uint8
from medsagan.data.sources import open_source
from medsagan.evaluate.localisation import localisation
from medsagan.inference import Detector
from medsagan.pseudo_anomalies import fpi_blend
from medsagan.runs import RunDir


def test_split(model: Detector, run_dir: str) -> ImageSet:
    """The run's test split, decoded as the run decodes its images (read from its cache when there)."""
    cfg = model.config
    return load_split(open_source(cfg), "test", cfg, RunDir(run_dir).cache_dir(cfg))


def blended_normals(run_dir: str, seed: int, images: str = "test") -> dict:
    """The localisation of pseudo-anomalies made from the run's test normals (or its development normals)."""
    model = Detector.open(run_dir, "cpu")
    if images == "dev":
        from devset import unused_pool_images

        found = unused_pool_images(RunDir(run_dir))
    else:
        found = test_split(model, run_dir)
    cfg = model.config
    normals = found.images[found.labels == 0]
    x = to_model_range(normals)
    rng = torch.Generator().manual_seed(seed)
    blended, boxes = fpi_blend(x, rng, cfg.loss.fpi_core, cfg.loss.fpi_half_width)
    pick = torch.arange(len(x)) % 2 == 0  # every other normal becomes a pseudo-anomaly
    mixed = torch.where(pick[:, None, None, None], blended, x)
    masks = (boxes[:, 0].bool() & pick[:, None, None]).numpy()
    scored = model.score(torch.from_numpy(to_uint8(mixed.numpy())))
    labels = pick.numpy().astype(int)
    where = localisation(scored.maps, masks, np.ones(len(labels), dtype=bool), labels, model.heatmap_vmax)
    return {
        "run": run_dir,
        "images": f"{images} normals",
        "image_auc_blended_vs_normal": float(roc_auc_score(labels, scored.scores)),
        **where.to_dict(),
        **restoration_quality(x[~pick].numpy(), scored.restored[~pick.numpy()], scored.maps[~pick.numpy()]),
        **blend_strength(x.numpy(), mixed.numpy(), scored, masks, labels, model.heatmap_vmax),
    }


def blend_strength(x: np.ndarray, mixed: np.ndarray, scored, masks: np.ndarray, labels: np.ndarray, vmax) -> dict:
    """How much of each blend the restoration undoes, and the localisation of the stronger half of the blends.

    A blend's strength is its mean absolute change inside its box; alpha ~ U(0, 1), so many are too faint to
    see. "Undone" is 1 - |x' - x| / |x_blended - x| summed over the box: 1 when the restoration gives the
    normal back, 0 when it copies the blend.
    """
    blended = np.flatnonzero(labels == 1)
    box = masks[blended][:, None]
    change = np.abs(mixed[blended] - x[blended]) * box
    left = np.abs(scored.restored[blended] - x[blended]) * box
    strength = change.sum((1, 2, 3)) / np.maximum(box.sum((1, 2, 3)) * x.shape[1], 1)
    undone = 1 - left.sum((1, 2, 3)) / np.maximum(change.sum((1, 2, 3)), 1e-12)
    median = np.median(strength)
    stronger = strength >= median
    subset = np.concatenate([np.flatnonzero(labels == 0), blended[stronger]])
    where = localisation(scored.maps[subset], masks[subset], np.ones(len(subset), dtype=bool), labels[subset], vmax)
    return {
        "blend_strength_median": float(median),
        "blend_undone": float(np.mean(undone)),
        "blend_undone_strong_half": float(np.mean(undone[stronger])),
        "strong_half_image_auc": float(roc_auc_score(labels[subset], scored.scores[subset])),
        "strong_half_pixel_auroc": where.pixel_auroc,
        "strong_half_aupro": where.aupro,
    }


def restoration_quality(images: np.ndarray, restorations: np.ndarray, maps: np.ndarray) -> dict:
    """Mean PSNR and SSIM of restored against input (images in [-1, 1], data range 2) and the share of the
    anomaly map's sum inside the body, over normal images [N, C, S, S]."""
    psnr, ssim, inside = [], [], []
    for x, restored, amap in zip(images, restorations, maps, strict=True):
        psnr.append(peak_signal_noise_ratio(x, restored, data_range=2.0))
        ssim.append(structural_similarity(x, restored, data_range=2.0, channel_axis=0))
        grey = x.mean(axis=0)
        body = ndimage.binary_fill_holes(grey > threshold_otsu(grey))  # the lungs are dark, but inside
        excess = amap.clip(0)  # a map less its normals' reference is negative where an image beats them
        inside.append(float(excess[body].sum() / max(excess.sum(), 1e-12)))
    return {
        "normals_psnr": float(np.mean(psnr)),
        "normals_ssim": float(np.mean(ssim)),
        "map_share_in_body": float(np.mean(inside)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", choices=("test", "dev"), default="test", help="whose normals (dev: unused pool)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    for run in args.runs:
        result = blended_normals(run, args.seed, args.images)
        print(json.dumps(result), flush=True)
        if args.markdown:
            print(
                f"| {run} | {result['image_auc_blended_vs_normal']:.3f} | {result['pixel_auroc']:.3f} "
                f"| {result['aupro']:.3f} | {result['pointing_game']:.3f} | {result['dice']:.3f} "
                f"| {result['normals_psnr']:.2f} | {result['normals_ssim']:.3f} | {result['map_share_in_body']:.3f} |"
            )


if __name__ == "__main__":
    main()
