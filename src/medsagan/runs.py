"""A run directory and what lives in it; loading a trained detector back from it.

RUN/config.yaml        the resolved configuration
RUN/data.json          the data the run trained on (counts, unlabelled set, validation)
RUN/log.jsonl          losses and validation metrics, one JSON object per line
RUN/checkpoints/       full training states (state-<iteration>.pt), the last few
RUN/best.pt            generator weights chosen on validation data, with how they were chosen
RUN/calibration.json   threshold and heatmap scale, fitted on validation data
RUN/evaluation/<split>/metrics.json, scores.csv   written by `medsagan evaluate`
"""

import json
from pathlib import Path
from typing import Any

import torch

from .config import Config, load_config
from .errors import RunError
from .files import load_tensors
from .models import AnomalyDetector, build_generator

CONFIG, DATA, LOG, BEST, CALIBRATION = "config.yaml", "data.json", "log.jsonl", "best.pt", "calibration.json"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RunError(f"device {name!r} is unknown; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(f"device {name!r} asked for, but this torch build sees no CUDA GPU; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RunError(f"device {name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RunError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return device


def cache_dir(cfg: Config, run_dir: Path) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir.resolve().parent / ".medsagan-cache"


def load_run_config(run_dir: str | Path) -> Config:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a medsagan run (no {CONFIG}); pass the --out folder of `medsagan train`")
    return load_config(path)


def load_best(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / BEST
    if not path.is_file():
        raise RunError(f"{path}: missing; the run has not finished a validation yet (resume it with --resume)")
    best = load_tensors(path)
    if not isinstance(best, dict) or not isinstance(best.get("generator"), dict):
        raise RunError(f"{path}: not a medsagan checkpoint (no generator weights in it)")
    return best


def load_detector(run_dir: str | Path, device: str = "auto") -> tuple[AnomalyDetector, Config, dict[str, Any]]:
    """The selected generator of a run, wrapped as a detector in eval mode, with the run's config and
    the selection record (iteration, metric)."""
    cfg = load_run_config(run_dir)
    best = load_best(run_dir)
    generator = build_generator(cfg.model)
    try:
        generator.load_state_dict(best["generator"])
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise RunError(
            f"{Path(run_dir) / BEST}: its weights do not fit the generator that {Path(run_dir) / CONFIG} "
            f"describes ({first})"
        ) from None
    detector = AnomalyDetector(generator).to(resolve_device(device)).eval()
    return detector, cfg, {k: v for k, v in best.items() if k != "generator"}


def load_calibration(run_dir: str | Path, selection: dict[str, Any]) -> dict[str, Any] | None:
    """The threshold and heatmap scale fitted for the weights in best.pt (`selection` is its record).

    None when the run has none yet, or when it belongs to other weights: a resumed run still training
    has a newer best.pt than any calibration, and the two are never mixed.
    """
    path = Path(run_dir) / CALIBRATION
    if not path.is_file():
        return None
    try:
        calibration = json.loads(path.read_text())
        fitted_for = calibration["selection"]["iteration"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise RunError(f"{path}: corrupt; refit it with `medsagan train --resume {run_dir}`") from None
    return calibration if fitted_for == selection.get("iteration") else None
