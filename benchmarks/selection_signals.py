"""How well each label-free selection signal picks checkpoints, judged on a development split, never on test.

    python benchmarks/selection_signals.py RUN [RUN ...] [--markdown]

For every training state a run kept (benchmarks/pneumonia64.py keeps one per validation), this scores the
selection signals of evaluate/selection.py on the run's own validation data: the validation AUC (labelled
val split, or AUCp of held-out normals against held-out unlabelled images), the pseudo-anomaly AUC (held-out
normals against pseudo-anomalies made from them) and their mean. It also scores the development split: for
Med-AD data the unused pool images of benchmarks/devset.py; for data with a labelled val split, that split
(so there the validation signal is the judge itself, and only the pseudo signal is put to the test). Each
signal picks the checkpoint where it is highest (from the run's select_from on), beside the last checkpoint
as a reference; a pick is good when its dev AUC is within 0.01 of the best kept checkpoint's. Writes
RUN/selection-signals.json and prints a summary.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from devset import unused_pool_images

from medsagan.config import selection_start
from medsagan.data.dataset import build_training_data
from medsagan.data.sources import open_source
from medsagan.evaluate.metrics import auc
from medsagan.evaluate.scoring import score_images
from medsagan.evaluate.selection import COMBINED, METRIC_NAMES, PSEUDO, pseudo_validation, validation_signals
from medsagan.files import atomic_write_text, load_tensors
from medsagan.models import AnomalyDetector, build_generator
from medsagan.runs import RunDir

WITHIN = 0.01


def signal_points(run_dir: str | Path) -> dict:
    """Per kept checkpoint: every selection signal and the dev AUC; and each signal's pick."""
    run = RunDir(run_dir)
    cfg = run.load_config()
    data = build_training_data(open_source(cfg), cfg, run.cache_dir(cfg))
    pseudo = pseudo_validation(data, cfg)
    validation = METRIC_NAMES[data.validation]
    dev = None if data.validation == "labelled" else unused_pool_images(run)
    detector = AnomalyDetector(build_generator(cfg.model)).eval()
    points = []
    for path in run.states():
        state = load_tensors(path, "medsagan training checkpoint")
        detector.generator.load_state_dict(state.get("ema", state["generator"]))
        signals = validation_signals(detector, data, pseudo)
        if dev is None:
            dev_auc = signals[validation]
        else:
            dev_auc = auc(dev.labels.numpy(), score_images(detector, dev.images).scores)
        points.append({"iteration": int(state["iteration"]), **signals, "dev_auc": dev_auc})
    start = selection_start(cfg)
    eligible = [p for p in points if p["iteration"] >= start] or points
    best = max(p["dev_auc"] for p in eligible)

    def judged(point: dict) -> dict:
        return {key: point[key] for key in ("iteration", "dev_auc")} | {"good": point["dev_auc"] >= best - WITHIN}

    # max() keeps the first of equals, as training does.
    picks = {name: judged(max(eligible, key=lambda p, name=name: p[name])) for name in (validation, PSEUDO, COMBINED)}
    picks["last"] = judged(eligible[-1])
    result = {"validation": data.validation, "best_dev_auc": best, "points": points, "picks": picks}
    atomic_write_text(run.path / "selection-signals.json", json.dumps(result, indent=1))
    return result


def summary(results: dict[str, dict]) -> str:
    """A Markdown table: per run, each signal's pick (iteration, dev AUC, good), and the share of good picks."""
    names = ("validation", "pseudo", "combined", "last")
    keyed = lambda result: dict(zip(names, result["picks"].values(), strict=True))  # noqa: E731
    lines = [
        "| run | best dev AUC | " + " | ".join(f"{n}: pick (dev AUC)" for n in names) + " |",
        "| --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    for run, result in results.items():
        cells = [f"{p['iteration']} ({p['dev_auc']:.3f}{'' if p['good'] else ', off'})" for p in keyed(result).values()]
        lines.append(f"| {run} | {result['best_dev_auc']:.3f} | " + " | ".join(cells) + " |")
    shares = [np.mean([keyed(r)[n]["good"] for r in results.values()]) for n in names]
    lines.append(f"| **picks within {WITHIN} of the best** | | " + " | ".join(f"**{s:.0%}**" for s in shares) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table of every run")
    args = parser.parse_args()
    results = {}
    for run in args.runs:
        results[run] = signal_points(run)
        print(run, json.dumps(results[run]["picks"]), flush=True)
    if args.markdown:
        print(summary(results))


if __name__ == "__main__":
    main()
