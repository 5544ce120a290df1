"""Several generators trained apart, restoring as one: the mean of their restorations (model.ensemble)."""

import torch
from torch import Tensor, nn


class Ensemble(nn.Module):
    """K generators of one architecture; `forward(x)` is the mean of their restorations, [B, C, S, S].

    A deep ensemble (Lakshminarayanan et al., NeurIPS 2017): members trained from different seeds make
    different errors, and on a few hundred normals much of one member's error is its seed's. The mean of the
    restorations is itself a restoration, so the score, the map, its reference, the calibration and the ONNX
    graph are the single generator's, unchanged. Where members disagree about a pixel the mean also damps the
    speckle each adds on its own.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    @property
    def patches(self) -> int:
        """The members' patch grid (ACM), for model-info."""
        return getattr(self.members[0], "patches", 1)

    def forward(self, x: Tensor) -> Tensor:
        """The mean of the members' restorations of `x`."""
        return torch.stack([member(x) for member in self.members]).mean(dim=0)
