"""`medsagan demo`: train the fast preset, evaluate it and draw heatmaps, with nothing downloaded."""

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .api import evaluate_run
from .config import load_config, merge
from .data.sources import open_source
from .errors import RunError
from .files import atomic_write_text, check_output
from .inference import Detector
from .runs import RunDir
from .train import fit
from .viz.heatmaps import gallery, save_panel

DEMO_ITERATIONS = 400  # the fast preset's batches of 16; the whole demo's minutes are in the README
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
    asked = iterations or DEMO_ITERATIONS
    demo = {"data": {"path": data or "synthetic"}, "train": {"iterations": asked, "device": device}}
    cfg = load_config(preset="fast", overrides=merge(overrides or {}, demo)).with_absolute_paths()
    fresh = not Path(out).exists()
    out = check_output(out, kind="demo")
    try:
        return _run(out, cfg, asked, device, progress, data, started)
    except BaseException:
        if fresh and not any(p.is_file() and p.name != ".medsagan.lock" for p in out.rglob("*")):
            shutil.rmtree(out, ignore_errors=True)  # a demo that never started training leaves no folder
        raise


def _run(out: Path, cfg, asked: int, device: str, progress: bool, data: str | None, started: float) -> str:
    run = RunDir(out / "run")
    if run.config.is_file():
        saved = run.load_config()
        if saved.data.path != cfg.data.path:
            raise RunError(f"{run} holds a demo trained on {saved.data.path}; choose another --out for {cfg.data.path}")
        if saved.train.iterations < asked or not run.calibration.is_file():
            # An interrupted or shorter demo continues; a longer one that was interrupted is never shortened.
            longest = max(saved.train.iterations, asked)
            try:
                resumed = run.resumed_config({"iterations": longest, "device": device})
            except RunError:
                resumed = None  # its decay has begun, so it cannot be extended: the demo trains a new run
            if resumed is None:
                shutil.rmtree(run.path)
                fit(cfg, run.path, progress=progress)
            else:
                fit(resumed, run.path, resume=True, progress=progress)
    else:
        fit(cfg, run.path, progress=progress)
    result = evaluate_run(run.path, "test", device=device)

    # Heatmap panels of the most and the least anomalous test images, on the run's fixed colour scale:
    # the evaluation's scores pick them, and only those few images are restored again for their maps.
    model = Detector.open(run.path, device)
    cfg, source = model.config, open_source(model.config)
    order = np.argsort(-result.scores, kind="stable")
    written = []
    for rank_name, picks in (("highest", order[:SHOWN]), ("lowest", order[::-1][:SHOWN])):
        truth = ["abnormal" if int(result.labels[i]) == 1 else "normal" for i in picks]
        captions = [
            f"{rank_name} #{rank}: score {result.scores[i]:.4f}, truly {label}"
            for rank, (i, label) in enumerate(zip(picks, truth, strict=True), 1)
        ]
        ids = [result.ids[i] for i in picks]
        panels = gallery(model, source, ids, captions)
        for rank, image in enumerate(panels, 1):
            written.append(save_panel(out / "panels" / f"{rank_name}-{rank}.png", image))

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
        "localisation": result.localisation,
        "panels": [str(p) for p in written],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    synthetic = "synthetic chest-radiograph-like images (a toy, see README)" if not data else source.describe()
    where = result.localisation
    pointing = (
        [
            f"where the lesions are (known on the synthetic images): pixel AUROC {where['pixel_auroc']:.3f}, "
            f"AUPRO {where['aupro']:.3f}, pointing game {where['pointing_game']:.3f}"
        ]
        if where
        else []
    )
    return "\n".join(
        [
            f"medsagan demo on {synthetic}",
            f"test AUC {result.auc:.3f}, AP {result.ap:.3f} "
            f"({result.n_normal} normal, {result.n_abnormal} abnormal test images)",
            *pointing,
            f"checkpoint: iteration {result.checkpoint.iteration}, chosen by {result.checkpoint.selection}",
            f"heatmaps of the {SHOWN} highest- and lowest-scored test images: {out / 'panels'}",
            f"metrics and per-image scores: {result.output}",
            f"took {seconds / 60:.1f} min; next: medsagan predict {run} IMAGES... --out predictions/",
        ]
    )
