"""A labelled development set from pool images a Med-AD run never sees, to choose settings without test labels.

    python benchmarks/devset.py RUN [RUN ...] [--normals 369] [--ratio 0.625]

The Med-AD protocol draws its unlabelled set from the front of `train/unlabeled/0` and `train/unlabeled/1`;
on pneumonia64 that leaves 369 normals and 3463 pneumonia images unused. This script takes the unused normals
and, after them in file order, enough unused abnormals for the test split's share of abnormals (390 of 624,
0.625), checks by content digest that none of them was trained or selected on, and scores every training
state the run kept. It writes RUN/devset.json: the dev AUC and AP per kept checkpoint, of the checkpoint the
run's own label-free selection chose, and of the last one. Settings of the `fast` preset are compared by these
figures, never by the test split's; the images come from the same pools as training, so the dev AUC sits above
the test AUC of the same weights (Kermany's test images were collected apart from its training images).
"""

import argparse
import json
from pathlib import Path

import numpy as np

from medsagan.data.dataset import ImageSet, load_images
from medsagan.data.sources import open_source
from medsagan.errors import DataError
from medsagan.evaluate.metrics import auc, average_precision
from medsagan.evaluate.scoring import score_images
from medsagan.files import atomic_write_text, load_tensors
from medsagan.models import AnomalyDetector, build_generator
from medsagan.runs import RunDir

TEST_ABNORMAL_SHARE = 390 / 624  # pneumonia64's test split


def unused_pool_images(run: RunDir, normals: int = 0, ratio: float = TEST_ABNORMAL_SHARE) -> ImageSet:
    """Unlabelled-pool images the run neither trained nor selected on: `normals` normals (0: all unused) and
    abnormals in the proportion `ratio`, both taken in file order after the ones the protocol used."""
    cfg = run.load_config()
    source = open_source(cfg)
    seen = set((run.load_digests() or {}).keys())
    if not seen:
        raise DataError(f"{run}: no training-digests.json, so the unused images cannot be told apart")
    cache = run.cache_dir(cfg)
    parts = []
    for label, pool in ((0, "train/unlabeled/0"), (1, "train/unlabeled/1")):
        ids = source.pools.get(pool, [])
        model, intensity = cfg.model, cfg.data.intensity
        loaded = load_images(source, ids, label, model.image_size, model.channels, False, cache, intensity)
        keep = [i for i, d in enumerate(loaded.digests) if d not in seen]
        parts.append(loaded.subset(keep))
    normal, abnormal = parts
    n_normal = min(len(normal), normals or len(normal))
    n_abnormal = min(len(abnormal), round(n_normal * ratio / (1 - ratio)))
    if n_normal < 10 or n_abnormal < 10:
        raise DataError(f"{run}: only {len(normal)} normal and {len(abnormal)} abnormal pool images are unused")
    return ImageSet.concat(normal.subset(range(n_normal)), abnormal.subset(range(n_abnormal)))


def dev_figures(run_dir: str | Path, normals: int = 0, ratio: float = TEST_ABNORMAL_SHARE) -> dict:
    """Dev AUC and AP of every kept checkpoint of a run, and of its chosen and last ones."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    dev = unused_pool_images(run, normals, ratio)
    labels = dev.labels.numpy()
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    points = []
    for path in run.states():
        state = load_tensors(path, "medsagan training checkpoint")
        detector.generator.load_state_dict(state.get("ema", state["generator"]))
        scores = score_images(detector, dev.images).scores
        points.append(
            {
                "iteration": int(state["iteration"]),
                "dev_auc": auc(labels, scores),
                "dev_ap": average_precision(labels, scores),
            }
        )
    chosen = run.load_best() if run.best.is_file() else None
    result = {
        "dev_images": {"normal": int((labels == 0).sum()), "abnormal": int((labels == 1).sum())},
        "points": points,
        "last": points[-1] if points else None,
    }
    if chosen is not None:
        weights, selection = chosen
        detector.generator.load_state_dict(weights)
        scores = score_images(detector, dev.images).scores
        result["chosen"] = {
            "iteration": selection.iteration,
            "dev_auc": auc(labels, scores),
            "dev_ap": average_precision(labels, scores),
        }
    if points:
        tail = points[-max(1, len(points) // 5) :]
        result["mean_of_last_fifth"] = float(np.mean([p["dev_auc"] for p in tail]))
    atomic_write_text(run.path / "devset.json", json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--normals", type=int, default=0, help="unused normals to take; 0: all")
    parser.add_argument("--ratio", type=float, default=TEST_ABNORMAL_SHARE, help="share of abnormals")
    args = parser.parse_args()
    for run in args.runs:
        result = dev_figures(run, args.normals, args.ratio)
        short = {k: result[k] for k in ("dev_images", "chosen", "last", "mean_of_last_fifth") if k in result}
        print(json.dumps({"run": run, **short}))


if __name__ == "__main__":
    main()
