"""The inference contract: one module whose output every consumer uses (scoring, predict, export, demo)."""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Restoration(NamedTuple):
    """What the detector returns for a batch.

    score: [B], the image's anomaly score, the mean of its unblurred anomaly map (the paper's).
    anomaly_map: [B, 1, S, S], |x - x'| / 2 averaged over channels, in the input's [0, 1] intensity units,
        blurred when the detector has a map_sigma, less its `reference` (the held-out normals' mean map) when
        it has one: then the map is the discrepancy in excess of a normal image's at that place.
    restored: [B, C, S, S] in [-1, 1], the healthy-looking restoration x'.
    """

    score: Tensor
    anomaly_map: Tensor
    restored: Tensor


def anomaly_map(x: Tensor, restored: Tensor) -> Tensor:
    """The paper's L1 discrepancy per pixel; /2 puts it in [0, 1] intensity units, as the official score."""
    return (x - restored).abs().mean(dim=1, keepdim=True) / 2


def image_score(amap: Tensor) -> Tensor:
    """Mean over the whole image (official solver.py): no ROI, smoothing or top-k."""
    return amap.flatten(1).mean(dim=1)


class GaussianBlur(nn.Module):
    """A separable Gaussian blur of [B, 1, S, S] maps, mirrored at the border, with no learnt weights.

    Its kernel is a non-persistent buffer, so a blurred detector loads and saves the same weights as a plain
    one, and it exports to ONNX as two convolutions.
    """

    def __init__(self, sigma: float, size: int):
        super().__init__()
        self.radius = min(math.ceil(4 * sigma), size - 1)  # scipy's truncation; a mirror pad needs < size
        offsets = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        self.register_buffer("kernel", kernel / kernel.sum(), persistent=False)

    def forward(self, amap: Tensor) -> Tensor:
        """The maps blurred, the same shape."""
        r, k = self.radius, self.kernel.to(amap)
        amap = F.conv2d(F.pad(amap, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(amap, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


class AnomalyDetector(nn.Module):
    """Wraps a generator; `forward(x)` returns a `Restoration`.

    In eval mode the generator's random mask is off and the result is a deterministic function of each
    image alone. In train mode the mask is on, which reproduces the official code's test behaviour.

    `map_sigma` > 0 blurs the anomaly map by a Gaussian of that sigma in pixels: a per-pixel difference is
    noisy (a restoration's speckle), a lesion is a region, so the blurred map ranks lesion pixels better. The
    score stays the mean of the unblurred map, so no image-level result changes with it.
    """

    def __init__(self, generator: nn.Module, map_sigma: float = 0.0, image_size: int = 64):
        super().__init__()
        self.generator = generator
        self.blur = GaussianBlur(map_sigma, image_size) if map_sigma > 0 else nn.Identity()
        # Fitted after training, stored in the run (not in the weights); an ONNX export holds it as a constant.
        self.register_buffer("reference", None, persistent=False)

    def forward(self, x: Tensor) -> Restoration:
        """Restore `x` and score it: a Restoration(score, anomaly_map, restored)."""
        restored = self.generator(x)
        amap = anomaly_map(x, restored)
        shown = self.blur(amap)
        if self.reference is not None:
            shown = shown - self.reference.to(shown)
        return Restoration(image_score(amap), shown, restored)
