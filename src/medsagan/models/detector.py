"""The inference contract: one module whose output every consumer uses (scoring, predict, export, demo)."""

from typing import NamedTuple

from torch import Tensor, nn


class Restoration(NamedTuple):
    """What the detector returns for a batch.

    score: [B], the image's anomaly score, the mean of its anomaly map.
    anomaly_map: [B, 1, S, S], |x - x'| / 2 averaged over channels, in the input's [0, 1] intensity units.
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


class AnomalyDetector(nn.Module):
    """Wraps a generator; `forward(x)` returns a `Restoration`.

    In eval mode the generator's random mask is off and the result is a deterministic function of each
    image alone. In train mode the mask is on, which reproduces the official code's test behaviour.
    """

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x: Tensor) -> Restoration:
        """Restore `x` and score it: a Restoration(score, anomaly_map, restored)."""
        restored = self.generator(x)
        amap = anomaly_map(x, restored)
        return Restoration(image_score(amap), amap, restored)
