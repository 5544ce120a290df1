"""Scoring: every path that turns images into anomaly scores goes through `score_images`.

It runs the detector in eval mode under `torch.inference_mode()`, in chunks of exactly `scoring_batch(device)`
images (the last one padded): convolution kernels are chosen by tensor shape, so a fixed shape makes an
image's score bit-identical whatever else is scored with it and however many images there are.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..data.dataset import to_model_range
from ..models import AnomalyDetector

SCORING_BATCH = 32  # CPU (and ONNX Runtime): larger chunks measured no faster on 2 cores
# A GPU keeps its cores busy only with larger chunks; per device the chunk shape is still fixed.
DEVICE_BATCH = {"cuda": 256}


def scoring_batch(device: torch.device) -> int:
    """The fixed chunk size scoring uses on `device`."""
    return DEVICE_BATCH.get(device.type, SCORING_BATCH)


OFFICIAL_SEED = 0
OFFICIAL_NOTE = "official scoring: generator in training mode, random output mask (p = 0.95), for comparison only"


@dataclass
class Scores:
    """scores [N]; maps [N, S, S] and restored [N, C, S, S] (float32, restored in [-1, 1]) when kept."""

    scores: np.ndarray
    maps: np.ndarray | None = None
    restored: np.ndarray | None = None


@contextmanager
def mode(module: nn.Module, training: bool):
    """Put `module` in train or eval mode for the block and restore its previous mode afterwards."""
    previous = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(previous)


def padded_chunks(images: Tensor, batch: int, device: torch.device | None = None):
    """(chunk, real count) over `images` in fixed chunks of `batch`, in [-1, 1], the last one padded with zeros.

    uint8 images are converted; float ones are taken as already in [-1, 1].
    """
    for start in range(0, images.shape[0], batch):
        chunk = images[start : start + batch]
        chunk = chunk.to(device) if device is not None else chunk
        x = to_model_range(chunk) if chunk.dtype == torch.uint8 else chunk.float()
        real = x.shape[0]
        if real < batch:
            x = torch.cat([x, x.new_zeros(batch - real, *x.shape[1:])])
        yield x, real


def score_images(
    detector: AnomalyDetector,
    images: Tensor,
    keep_maps: bool = False,
    official: bool = False,
) -> Scores:
    """Score uint8 [N, C, S, S] images (or float ones already in [-1, 1]) on the detector's device.

    `official=True` reproduces the official test behaviour (training mode: the random mask is drawn) with a
    fixed seed, so even that comparison is repeatable.
    """
    device = next(detector.parameters()).device
    scores, maps, restored = [], [], []
    with mode(detector, official), torch.inference_mode(), torch.random.fork_rng(devices=_cuda_devices(device)):
        if official:
            torch.manual_seed(OFFICIAL_SEED)
        for x, real in padded_chunks(images, scoring_batch(device), device):
            result = detector(x)
            scores.append(result.score[:real].float().cpu())
            if keep_maps:
                maps.append(result.anomaly_map[:real, 0].float().cpu())
                restored.append(result.restored[:real].float().cpu())
    as_numpy = lambda parts: torch.cat(parts).numpy() if parts else None  # noqa: E731
    empty = np.zeros(0, dtype=np.float32)
    return Scores(as_numpy(scores) if scores else empty, as_numpy(maps), as_numpy(restored))


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []
