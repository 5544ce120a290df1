"""Brainomaly's generator (Siddiquee et al., WACV 2024), the "Baseline [22]" row of the paper's Table 3.

StarGAN-style: 7x7 stem, two stride-2 downs, residual blocks, two ups and a 7x7 conv to a one-channel
additive map; x' = tanh(x + map). No patches, codes, skips, attention or random mask (Brainomaly's
official generator, the one SAGAN's model.py extends at zzr728/SAGAN 2fa5bd7).
"""

from torch import Tensor, nn

from ..errors import ConfigError
from .blocks import ResidualBlock, conv_norm_relu, down, restore, up


class BrainomalyGenerator(nn.Module):
    """Args: image_size, channels, conv_dim (official 64), residual_blocks (official 6).

    The additive map has one channel and is broadcast over the input's channels, as in Brainomaly.
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 1,
        conv_dim: int = 64,
        residual_blocks: int = 6,
        upsample: str = "transposed",
        residual: str = "input",
    ):
        super().__init__()
        if image_size % 4 or image_size < 8:
            raise ConfigError(
                f"model.image_size {image_size} does not suit the baseline generator: it halves the image "
                "twice and needs a multiple of 4, at least 8 (for example 32, 64, 128 or 256)."
            )
        self.mask_keep, self.residual = 1.0, residual
        self.main = nn.Sequential(
            conv_norm_relu(channels, conv_dim, 7, 1, 3),
            down(conv_dim, conv_dim * 2),
            down(conv_dim * 2, conv_dim * 4),
            *(ResidualBlock(conv_dim * 4) for _ in range(residual_blocks)),
            up(conv_dim * 4, conv_dim * 2, upsample),
            up(conv_dim * 2, conv_dim, upsample),
            nn.Conv2d(conv_dim, 1, 7, 1, 3, bias=False),
        )

    def additive_map(self, x: Tensor) -> Tensor:
        """The additive map before tanh, [B, 1, S, S]."""
        return self.main(x)

    def forward(self, x: Tensor) -> Tensor:
        """The restoration x' = tanh(x + map)."""
        return restore(self.additive_map(x), x, self.mask_keep, self.training, self.residual)
