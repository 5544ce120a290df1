"""Checkpoint averaging study: does averaging the weights of several kept checkpoints beat the one chosen?

    python benchmarks/checkpoint_average.py RUN [RUN ...]

For a finished run that kept a state at every validation, averages the generator's weights (the trained
weights, not a moving average) over the k checkpoints with the best logged label-free metric, and over the
last k, for k = 1, 3, 5. Each average is scored on the run's validation data (its held-out AUCp) and on the
test split, read once after training. The held-out figure of a top-k average is not an honest estimate (the
same data ranked its members); the test figures say whether averaging would have helped. Writes
checkpoint-average.json in the run folder.
"""

import json
from pathlib import Path

import numpy as np
import torch
from trajectory import logged_metric, separation

from medsagan.data.dataset import build_training_data, load_split, without_duplicates
from medsagan.data.sources import open_source
from medsagan.evaluate.metrics import auc, average_precision
from medsagan.evaluate.scoring import score_images
from medsagan.files import atomic_write_text, load_tensors
from medsagan.models import AnomalyDetector, build_generator
from medsagan.runs import RunDir

SIZES = (1, 3, 5)


def average(weights: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several state dicts of one network (integer buffers from the first)."""
    return {
        key: torch.stack([w[key].double() for w in weights]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in weights[0].items()
    }


def study(run_dir: str | Path) -> dict:
    run = RunDir(run_dir)
    cfg = run.load_config()
    source = open_source(cfg)
    data = build_training_data(source, cfg, run.cache_dir(cfg))
    logged = logged_metric(run)
    states = {}
    for path in run.states():
        state = load_tensors(path, "medsagan training checkpoint")
        if int(state["iteration"]) in logged:
            states[int(state["iteration"])] = state["generator"]
    ranked = sorted(states, key=lambda i: logged[i], reverse=True)
    latest = sorted(states, reverse=True)
    test, _ = without_duplicates(load_split(source, "test", cfg, run.cache_dir(cfg)), run.load_digests() or {})
    labels = test.labels.numpy()
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    rows = []
    for name, order in (("best", ranked), ("last", latest)):
        for k in SIZES:
            members = sorted(order[:k])
            detector.generator.load_state_dict(average([states[i] for i in members]))
            scores = score_images(detector, test.images).scores
            rows.append(
                {
                    "members": f"{name} {k}",
                    "iterations": members,
                    "validation": separation(detector, data.val_normal.images, data.val_positive.images),
                    "test_auc": auc(labels, scores),
                    "test_ap": average_precision(labels, scores),
                }
            )
    result = {"validation": data.validation, "rows": rows}
    atomic_write_text(run.path / "checkpoint-average.json", json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    for run_dir in args.runs:
        found = study(run_dir)
        print(f"{run_dir} ({found['validation']})")
        for r in found["rows"]:
            print(
                f"{r['members']:7s} {np.round(r['validation'], 3):.3f} {r['test_auc']:.3f} {r['test_ap']:.3f} "
                f"{r['iterations']}"
            )
