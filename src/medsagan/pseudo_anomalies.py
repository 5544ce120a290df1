"""Pseudo-anomalies made from normal images, vectorised over the batch and driven by a torch.Generator.

Each method takes a batch [B, C, H, W] and returns (anomalous batch, box mask [B, 1, H, W] in {0, 1}).
"""

from collections.abc import Callable

import torch
from torch import Tensor

from .config import LossConfig
from .errors import ConfigError


def _uniform_int(low: Tensor | int, high: Tensor | int, size: int, rng: torch.Generator, device) -> Tensor:
    """Integers uniform in [low, high), elementwise."""
    low_t = torch.as_tensor(low, device=device)
    span = torch.as_tensor(high, device=device) - low_t
    return low_t + (torch.rand(size, generator=rng, device=device) * span).long().clamp_max(span - 1)


def _box_mask(top: Tensor, left: Tensor, height: Tensor, width: Tensor, h: int, w: int) -> Tensor:
    """[B, 1, h, w] float mask of the boxes rows [top, top+height) x cols [left, left+width), clipped to the image."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1).float()


def other_images(images: Tensor, rng: torch.Generator) -> Tensor:
    """For each image, another image of the batch chosen uniformly (never itself)."""
    b = images.shape[0]
    if b < 2:
        raise ConfigError(
            "pseudo-anomalies need a batch of at least 2 images to take patches from; raise train.batch_size"
        )
    offset = torch.randint(1, b, (b,), generator=rng, device=rng.device)
    return images[(torch.arange(b, device=images.device) + offset.to(images.device)) % b]


def fpi_blend(
    images: Tensor,
    rng: torch.Generator,
    core: float = 0.6,
    half_width: tuple[float, float] = (0.05, 0.2),
    sources: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Foreign patch interpolation as zzr728/SAGAN data_loader.py makes it (2fa5bd7).

    A square box whose centre is uniform in the central `core` share of the image and whose half-width
    is uniform in [half_width[0], half_width[1]) of the side, filled with alpha * source + (1 - alpha) * image,
    one alpha ~ U(0, 1) per image; the source is another normal image at the same location.
    """
    b, _, h, w = images.shape
    device = rng.device
    sources = other_images(images, rng) if sources is None else sources
    offset_r, offset_c = int((1 - core) / 2 * h), int((1 - core) / 2 * w)
    centre_r = _uniform_int(offset_r, int((1 - core) / 2 * h + core * h), b, rng, device)
    centre_c = _uniform_int(offset_c, int((1 - core) / 2 * w + core * w), b, rng, device)
    low, high = max(1, round(half_width[0] * w)), max(2, round(half_width[1] * w))
    half = _uniform_int(low, high, b, rng, device)
    alpha = torch.rand(b, generator=rng, device=device)
    mask = _box_mask(centre_r - half, centre_c - half, 2 * half, 2 * half, h, w).to(images.device)
    weight = alpha.to(images.device)[:, None, None, None] * mask
    return images + weight * (sources - images), mask


def cut_paste(
    images: Tensor, rng: torch.Generator, area: tuple[float, float] = (0.02, 0.15), aspect: float = 0.3
) -> tuple[Tensor, Tensor]:
    """CutPaste (Li et al., CVPR 2021): a rectangle of the image itself pasted elsewhere in the image.

    Area uniform in `area` of the image, aspect ratio log-uniform in [aspect, 1/aspect], both boxes inside
    the image; no colour jitter, as in the NSA framework's chest X-ray setting.
    """
    b, _, h, w = images.shape
    device = rng.device
    box_area = (area[0] + (area[1] - area[0]) * torch.rand(b, generator=rng, device=device)) * h * w
    log_ratio = torch.log(torch.tensor(aspect)) * (1 - 2 * torch.rand(b, generator=rng, device=device))
    ratio = torch.exp(log_ratio)
    bh = (box_area * ratio).sqrt().round().long().clamp(1, h - 1)
    bw = (box_area / ratio).sqrt().round().long().clamp(1, w - 1)
    src_top, src_left = _uniform_int(0, h - bh + 1, b, rng, device), _uniform_int(0, w - bw + 1, b, rng, device)
    dst_top, dst_left = _uniform_int(0, h - bh + 1, b, rng, device), _uniform_int(0, w - bw + 1, b, rng, device)
    mask = _box_mask(dst_top, dst_left, bh, bw, h, w).to(images.device)
    inside = mask[:, 0].bool()
    rows = torch.arange(h, device=images.device).view(1, h, 1).expand(b, h, w)
    cols = torch.arange(w, device=images.device).view(1, 1, w).expand(b, h, w)
    shift_r = (src_top - dst_top).to(images.device).view(b, 1, 1)
    shift_c = (src_left - dst_left).to(images.device).view(b, 1, 1)
    src_rows = torch.where(inside, rows + shift_r, rows)
    src_cols = torch.where(inside, cols + shift_c, cols)
    batch = torch.arange(b, device=images.device).view(b, 1, 1).expand(b, h, w)
    pasted = images.permute(0, 2, 3, 1)[batch, src_rows, src_cols].permute(0, 3, 1, 2)
    return pasted.contiguous(), mask


PSEUDO_ANOMALIES: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {"fpi": fpi_blend, "cutpaste": cut_paste}


def make_pseudo_anomalies(name: str, images: Tensor, rng: torch.Generator, **options) -> tuple[Tensor, Tensor]:
    """Dispatch by name: "fpi" (the paper's) or "cutpaste"."""
    if name not in PSEUDO_ANOMALIES:
        raise ConfigError(f"loss.pseudo_anomaly {name!r} is unknown; choose one of {', '.join(PSEUDO_ANOMALIES)}")
    return PSEUDO_ANOMALIES[name](images, rng, **options)


def configured_pseudo_anomalies(
    cfg: LossConfig, images: Tensor, rng: torch.Generator, sources: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The run's pseudo-anomalies (loss.pseudo_anomaly with its FPI settings) made from `images`.

    FPI blends each image with `sources` (one per image), or with another image of the batch when none are given.
    """
    options = {}
    if cfg.pseudo_anomaly == "fpi":
        options = {"core": cfg.fpi_core, "half_width": cfg.fpi_half_width, "sources": sources}
    return make_pseudo_anomalies(cfg.pseudo_anomaly, images, rng, **options)
