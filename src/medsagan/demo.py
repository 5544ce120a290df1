"""`medsagan demo`: train the fast preset, evaluate it and draw heatmaps, with nothing downloaded."""

import json
import time
from pathlib import Path

import numpy as np
import torch

from .config import load_config, merge
from .data.dataset import to_model_range
from .data.sources import open_source
from .errors import RunError
from .evaluate.report import evaluate_run
from .evaluate.scoring import score_images
from .files import atomic_write_text
from .runs import RunDir, load_detector
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
    run = RunDir(out / "run")
    asked = iterations or DEMO_ITERATIONS
    demo = {"data": {"path": data or "synthetic"}, "train": {"iterations": asked, "device": device}}
    cfg = load_config(preset="fast", overrides=merge(overrides or {}, demo)).with_absolute_paths()
    if run.config.is_file():
        saved = run.load_config()
        if saved.data.path != cfg.data.path:
            raise RunError(f"{run} holds a demo trained on {saved.data.path}; choose another --out for {cfg.data.path}")
        if saved.train.iterations < asked or not run.calibration.is_file():
            # An interrupted or shorter demo continues; a longer one that was interrupted is never shortened.
            longest = max(saved.train.iterations, asked)
            fit(run.resumed_config({"iterations": longest, "device": device}), run.path, resume=True, progress=progress)
    else:
        fit(cfg, run.path, progress=progress)
    result = evaluate_run(run.path, "test", device=device)

    # Heatmap panels of the most and the least anomalous test images, on the run's fixed colour scale:
    # the evaluation's scores pick them, and only those few images are restored again for their maps.
    detector, cfg, _ = load_detector(run.path, device)
    source = open_source(cfg)
    order = np.argsort(-result.scores, kind="stable")
    picks = {"highest": order[:SHOWN], "lowest": order[::-1][:SHOWN]}
    written = []
    for rank_name, indices in picks.items():
        images = torch.from_numpy(
            np.stack([source.decode(result.ids[i], cfg.model.image_size, cfg.model.channels) for i in indices])
        )
        restored = score_images(detector, images, keep_maps=True)
        for rank, (i, map_, back) in enumerate(zip(indices, restored.maps, restored.restored, strict=True), 1):
            truth = "abnormal" if int(result.labels[i]) == 1 else "normal"
            caption = f"{rank_name} #{rank}: score {result.scores[i]:.4f}, truly {truth}"
            image = to_model_range(images[rank - 1]).numpy()
            target = out / "panels" / f"{rank_name}-{rank}.png"
            written.append(save_panel(target, panel(image, back, map_, result.calibration.heatmap_vmax, caption)))

    seconds = time.perf_counter() - started
    summary = {
        "data": source.describe(),
        "run": str(run),
        "iterations": cfg.train.iterations,
        "test_auc": result.auc,
        "test_ap": result.ap,
        "n_normal": result.n_normal,
        "n_abnormal": result.n_abnormal,
        "seconds": round(seconds, 1),
        "checkpoint": result.checkpoint.to_dict(),
        "panels": [str(p) for p in written],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    synthetic = "synthetic chest-radiograph-like images (a toy, see README)" if not data else source.describe()
    return "\n".join(
        [
            f"medsagan demo on {synthetic}",
            f"test AUC {result.auc:.3f}, AP {result.ap:.3f} "
            f"({result.n_normal} normal, {result.n_abnormal} abnormal test images)",
            f"checkpoint: iteration {result.checkpoint.iteration}, chosen by {result.checkpoint.selection}",
            f"heatmaps of the {SHOWN} highest- and lowest-scored test images: {out / 'panels'}",
            f"metrics and per-image scores: {result.output}",
            f"took {seconds / 60:.1f} min; next: medsagan predict {run} IMAGES... --out predictions/",
        ]
    )
