"""Differentiable augmentation of the critic's inputs (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020).

With a few hundred normals a critic memorises its reals and its gradient stops teaching the generator. The
same kind of random transform on real and restored images, through which the generator's gradient flows,
keeps the critic from telling them apart by memory while leaving what it must judge (is this anatomy
healthy?) unchanged. Only anatomy-preserving transforms: no flips, since the heart's side and the patch
position codes carry meaning. Random draws are made once per global batch (`draw`), so that every torchrun
rank applies its slice of the same draws.
"""

import torch
from torch import Tensor
from torch.nn import functional

from .errors import ConfigError

TRANSFORMS = ("brightness", "contrast", "translation", "scale", "cutout")

# Strengths, as DiffAugment's and ADA's defaults scaled down for anatomy: shifts up to an eighth of the
# side (whole pixels, so a shift alone never blurs), zoom 0.9-1.1, brightness +-10 % and contrast 0.8-1.2 of
# the intensity range, a cutout square a quarter of the side.
SHIFT = 0.125
ZOOM = 0.1
BRIGHTNESS = 0.2
CONTRAST = 0.2
CUTOUT = 0.25

# One uniform number per transform decides whether it applies, then its parameters.
_COLUMNS = {"apply": 5, "brightness": 1, "contrast": 1, "shift": 2, "zoom": 1, "cutout": 2}
WIDTH = sum(_COLUMNS.values())


# A cutout square in a normal would make it abnormal, so the training images' augmentation leaves it out.
IMAGE_TRANSFORMS = ("brightness", "contrast", "translation", "scale")


def parse_policy(text: str, key: str = "loss.critic_augment", allowed: tuple[str, ...] = TRANSFORMS) -> tuple[str, ...]:
    """The transforms named in `text` ("translation,cutout"); a name not `allowed` is a ConfigError naming `key`."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise ConfigError(
            f"{key}: transform {unknown[0]!r} is not offered here; give a comma-separated list of {', '.join(allowed)}"
        )
    return names


def draw(n: int, rng: torch.Generator) -> Tensor:
    """Uniform random numbers for `n` images, [n, WIDTH]; `apply` maps them to transforms."""
    return torch.rand(n, WIDTH, generator=rng, device=rng.device)


def _split(uniforms: Tensor) -> dict[str, Tensor]:
    parts, start = {}, 0
    for name, width in _COLUMNS.items():
        parts[name] = uniforms[:, start : start + width]
        start += width
    return parts


def apply(x: Tensor, uniforms: Tensor, policy: tuple[str, ...], probability: float) -> Tensor:
    """`x` [B, C, S, S] in [-1, 1], each transform of `policy` applied to each image with `probability`."""
    u = _split(uniforms.to(x.device, torch.float32))
    on = {name: (u["apply"][:, i] < probability).float() for i, name in enumerate(TRANSFORMS)}
    per_image = (-1, 1, 1, 1)
    if "brightness" in policy:
        x = x + (on["brightness"] * (u["brightness"][:, 0] - 0.5) * 2 * BRIGHTNESS).view(per_image).to(x.dtype)
    if "contrast" in policy:
        factor = 1 + on["contrast"] * (u["contrast"][:, 0] - 0.5) * 2 * CONTRAST
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor.view(per_image).to(x.dtype) + mean
    if "translation" in policy or "scale" in policy:
        x = _geometric(x, u, on, policy)
    if "cutout" in policy:
        x = _cutout(x, u["cutout"], on["cutout"])
    return x


def _geometric(x: Tensor, u: dict[str, Tensor], on: dict[str, Tensor], policy: tuple[str, ...]) -> Tensor:
    """Shift and zoom in one resampling; the space uncovered is black (-1), as outside a radiograph."""
    size = x.shape[-1]
    n = x.shape[0]
    zoom = torch.ones(n, device=x.device)
    shift = torch.zeros(n, 2, device=x.device)
    if "scale" in policy:
        zoom = 1 + on["scale"] * (u["zoom"][:, 0] - 0.5) * 2 * ZOOM
    if "translation" in policy:
        pixels = torch.round((u["shift"] - 0.5) * 2 * SHIFT * size) * on["translation"][:, None]
        shift = pixels * 2 / size
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = shift
    grid = functional.affine_grid(theta, list(x.shape), align_corners=False).to(x.dtype)
    return functional.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


def _cutout(x: Tensor, centres: Tensor, on: Tensor) -> Tensor:
    """A square of mid-grey (0) per image, where its transform applies."""
    size = x.shape[-1]
    half = CUTOUT * size / 2
    coords = torch.arange(size, device=x.device, dtype=torch.float32) + 0.5
    cy, cx = (centres[:, 0] * size)[:, None], (centres[:, 1] * size)[:, None]
    rows = ((coords[None] - cy).abs() < half).float()
    cols = ((coords[None] - cx).abs() < half).float()
    hole = rows[:, :, None] * cols[:, None, :] * on[:, None, None]
    return x * (1 - hole[:, None]).to(x.dtype)
