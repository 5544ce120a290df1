"""`medsagan demo`: train the fast preset, evaluate it and draw heatmaps, with nothing downloaded."""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .config import load_config, merge
from .data.dataset import load_split
from .data.sources import open_source
from .errors import RunError
from .evaluate.report import evaluate_run
from .evaluate.scoring import score_images
from .files import atomic_write_text
from .runs import CALIBRATION, CONFIG, cache_dir, load_calibration, load_detector, load_run_config
from .train import fit
from .viz.heatmaps import panel, save_panel

DEMO_ITERATIONS = 250  # 7.4 min for the whole demo on 2 slow CPU cores, under the 10 minutes promised (README)
SHOWN = 4


def run_demo(
    out: str | Path,
    data: str | None = None,
    iterations: int | None = None,
    device: str = "auto",
    progress: bool = True,
    overrides: dict | None = None,
) -> str:
    """Train (or resume, or reuse) OUT/run, evaluate it on its test split, write OUT/panels; a summary text.

    `overrides` (a nested dict) changes the fast preset further; the tests use it to shrink the model.
    """
    started = time.perf_counter()
    out = Path(out)
    run = out / "run"
    demo = {
        "data": {"path": data or "synthetic"},
        "train": {"iterations": iterations or DEMO_ITERATIONS, "device": device},
    }
    cfg = load_config(preset="fast", overrides=merge(overrides or {}, demo)).with_absolute_paths()
    if (run / CONFIG).is_file():
        saved = load_run_config(run)
        if saved.data.path != cfg.data.path:
            raise RunError(f"{run} holds a demo trained on {saved.data.path}; choose another --out for {cfg.data.path}")
        if saved.train.iterations < cfg.train.iterations or not (run / CALIBRATION).is_file():
            # An interrupted or shorter demo continues; a longer one that was interrupted is never shortened.
            longest = max(saved.train.iterations, cfg.train.iterations)
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=longest))
            fit(cfg, run, resume=True, progress=progress)
    else:
        fit(cfg, run, progress=progress)
    metrics = evaluate_run(run, "test", device=device)

    # Heatmap panels of the most and the least anomalous test images, on the run's fixed colour scale.
    detector, cfg, selection = load_detector(run, device)
    source = open_source(
        cfg.data.path, cfg.data.source, cfg.data.medmnist_task, cfg.data.synthetic_count, cfg.model.image_size
    )
    test = load_split(source, "test", cfg.model, cfg.data.skip_bad, cache_dir(cfg, run))
    result = score_images(detector, test.images, keep_maps=True)
    calibration = load_calibration(run, selection)
    vmax = calibration["heatmap_scale"]["vmax"]
    order = np.argsort(-result.scores)
    written = []
    for rank_name, picks in (("highest", order[:SHOWN]), ("lowest", order[::-1][:SHOWN])):
        for rank, i in enumerate(picks, 1):
            truth = "abnormal" if int(test.labels[i]) == 1 else "normal"
            caption = f"{rank_name} #{rank}: score {result.scores[i]:.4f}, truly {truth}"
            image = test.images[i].numpy().astype(np.float32) / 127.5 - 1
            written.append(
                save_panel(
                    out / "panels" / f"{rank_name}-{rank}.png",
                    panel(image, result.restored[i], result.maps[i], vmax, caption),
                )
            )

    seconds = time.perf_counter() - started
    summary = {
        "data": source.describe(),
        "run": str(run),
        "iterations": cfg.train.iterations,
        "test_auc": metrics["auc"],
        "test_ap": metrics["ap"],
        "n_normal": metrics["n_normal"],
        "n_abnormal": metrics["n_abnormal"],
        "seconds": round(seconds, 1),
        "checkpoint": metrics["checkpoint"],
        "panels": [str(p) for p in written],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    synthetic = "synthetic chest-radiograph-like images (a toy, see README)" if not data else source.describe()
    chosen = metrics["checkpoint"]
    return "\n".join(
        [
            f"medsagan demo on {synthetic}",
            f"test AUC {metrics['auc']:.3f}, AP {metrics['ap']:.3f} "
            f"({metrics['n_normal']} normal, {metrics['n_abnormal']} abnormal test images)",
            f"checkpoint: iteration {chosen['iteration']}, chosen by {chosen['selection']}",
            f"heatmaps of the {SHOWN} highest- and lowest-scored test images: {out / 'panels'}",
            f"metrics and per-image scores: {metrics['output']}",
            f"took {seconds / 60:.1f} min; next: medsagan predict {run} IMAGES... --out predictions/",
        ]
    )
