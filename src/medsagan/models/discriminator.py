"""The WGAN-GP critic: Discriminator in zzr728/SAGAN model.py at commit 2fa5bd7.

Stride-2 4x4 convs with bias and LeakyReLU (official slope 0.01), no normalisation (a gradient penalty forbids batch
statistics), and a 3x3 head to one channel.
"""

import math

from torch import Tensor, nn


def critic_layers(image_size: int, layers: int) -> int:
    """Stride-2 convs used: the official six at 64 px (a 1x1 map), fewer where the image is smaller."""
    return max(1, min(layers, int(math.log2(image_size))))


class Critic(nn.Module):
    """D(x): [B, C, S, S] -> [B, 1, s, s] critic map (s = 1 at 64 px with six layers: a global critic).

    Args:
        image_size: side of the input.
        channels: input channels.
        conv_dim: width of the first conv; each layer doubles it (official 64).
        layers: stride-2 convs at 64 px and above (official 6).
        slope: the LeakyReLU's negative slope (official 0.01). Through six layers a unit that is off passes
            slope**6 of its gradient: at 0.01 a critic whose deep units all turn off cannot recover.
    """

    def __init__(
        self, image_size: int = 64, channels: int = 1, conv_dim: int = 64, layers: int = 6, slope: float = 0.01
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        width_in, width = channels, conv_dim
        for _ in range(critic_layers(image_size, layers)):
            blocks += [nn.Conv2d(width_in, width, 4, 2, 1), nn.LeakyReLU(slope)]
            width_in, width = width, width * 2
        self.main = nn.Sequential(*blocks)
        self.head = nn.Conv2d(width_in, 1, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """The critic map D(x)."""
        return self.head(self.main(x))
