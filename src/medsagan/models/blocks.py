"""Layers shared by the generators, named after zzr728/SAGAN model.py (2fa5bd7).

Every InstanceNorm here keeps no running statistics: the official code never left training mode, so
its published numbers come from per-instance statistics, and this makes `eval()` compute exactly that.
"""

import torch
from torch import Tensor, nn


class InstanceNorm(nn.GroupNorm):
    """InstanceNorm2d without running statistics, computed as GroupNorm with one channel per group.

    The two are the same function (per image and channel, over space, eps 1e-5, with the same weight and
    bias names); PyTorch's GroupNorm kernels run the generator's training step about 1.5x faster on CPU.
    """

    def __init__(self, channels: int, affine: bool = True):
        super().__init__(channels, channels, eps=1e-5, affine=affine)


def instance_norm(channels: int, affine: bool = True) -> InstanceNorm:
    """Per-image, per-channel normalisation with running statistics off, as the official layers."""
    return InstanceNorm(channels, affine)


def conv_norm_relu(in_ch: int, out_ch: int, kernel: int, stride: int, padding: int) -> nn.Sequential:
    """Conv (no bias), InstanceNorm, ReLU: the official code's basic layer."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False), instance_norm(out_ch), nn.ReLU(inplace=True)
    )


def down(in_ch: int, out_ch: int) -> nn.Sequential:
    """Encoder level: 4x4 stride-2 conv, InstanceNorm, ReLU; halves the size."""
    return conv_norm_relu(in_ch, out_ch, 4, 2, 1)


def up(in_ch: int, out_ch: int, mode: str = "transposed") -> nn.Sequential:
    """Decoder level that doubles the size, then InstanceNorm and ReLU.

    "transposed": the official 4x4 stride-2 transposed conv. "resize": nearest-neighbour doubling, then a 3x3
    conv, which cannot overlap unevenly and so draws no checkerboard (Odena et al., Distill 2016).
    """
    if mode == "resize":
        doubling = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        )
    else:
        doubling = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False)
    return nn.Sequential(doubling, instance_norm(out_ch), nn.ReLU(inplace=True))


def position_fuse(channels: int, bits: int) -> nn.Sequential:
    """ACM fuse: 1x1 conv (with bias) from C + K back to C channels, parameter-free InstanceNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(channels + bits, channels, 1), instance_norm(channels, affine=False), nn.ReLU(inplace=True)
    )


class ResidualBlock(nn.Module):
    """StarGAN residual block at constant width: x + IN(conv(ReLU(IN(conv(x)))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            instance_norm(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            instance_norm(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """The input plus the block's residual."""
        return x + self.main(x)


class DecoderBlock(nn.Module):
    """The official "ResidualBlock1": h = ReLU(IN(conv(z))) changes the width, then h + IN(conv(h)).

    It has no activation after the sum, unlike a standard residual block.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.entry = conv_norm_relu(in_ch, out_ch, 3, 1, 1)
        self.residual = nn.Sequential(nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), instance_norm(out_ch))

    def forward(self, z: Tensor) -> Tensor:
        """The decoder level's output."""
        h = self.entry(z)
        return h + self.residual(h)


class AttentionGate(nn.Module):
    """ARRM additive attention gate (paper Eq. 8-9): alpha = S(C3(R(C1(f) + C2(g)))); only the skip is scaled.

    InstanceNorm replaces Attention U-Net's BatchNorm, and a one-channel InstanceNorm sits before the
    sigmoid, so the attention logits are standardised per patch over space (official model.py).
    """

    def __init__(self, gating_ch: int, skip_ch: int, inner_ch: int):
        super().__init__()
        self.gating = nn.Sequential(nn.Conv2d(gating_ch, inner_ch, 1), instance_norm(inner_ch, affine=False))
        self.skip = nn.Sequential(nn.Conv2d(skip_ch, inner_ch, 1), instance_norm(inner_ch, affine=False))
        self.coefficient = nn.Sequential(nn.Conv2d(inner_ch, 1, 1), instance_norm(1, affine=False), nn.Sigmoid())

    def attention(self, gating: Tensor, skip: Tensor) -> Tensor:
        """The attention coefficients alpha in [0, 1], [B, 1, H, W]."""
        return self.coefficient(torch.relu(self.gating(gating) + self.skip(skip)))

    def forward(self, gating: Tensor, skip: Tensor) -> Tensor:
        """The skip connection weighted by the attention map computed from `gating` and `skip`."""
        return skip * self.attention(gating, skip)


# Inputs are clipped this far inside [-1, 1] before atanh, so a saturated pixel has a finite logit (3.8).
LOGIT_LIMIT = 1.0 - 1e-3


def restore(additive_map: Tensor, x: Tensor, keep: float, training: bool, residual: str = "input") -> Tensor:
    """The restoration x' = tanh(G(x) + x) (paper Eq. 1-2), or tanh(G(x) + atanh(x)) with residual "logit".

    G(x) = I(x)*delta + (1 - delta)*x with delta ~ Bernoulli(keep). The mask exists only in training mode:
    the official code also drew it at test time, which made its
    scores random. One delta per pixel, shared by the channels.

    With "input" (the paper) a map of zero returns tanh(x), not x: to keep a normal pixel the network must
    learn atanh(x) - x, which has no finite value at x = -1. With "logit" a map of zero is the identity and a
    masked pixel keeps its input.
    """
    if residual == "logit":
        if training and keep < 1.0:
            additive_map = additive_map * _keep_mask(x, keep)
        return torch.tanh(additive_map + torch.atanh(x.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)))
    if training and keep < 1.0:
        additive_map = torch.where(_keep_mask(x, keep), additive_map, x)
    return torch.tanh(additive_map + x)


def perfectly_restored(x: Tensor, keep: float, residual: str = "input") -> Tensor:
    """The training-mode output of a generator that restores x exactly, for one fresh draw of the mask.

    x where the mask keeps the map, tanh(2x) where it puts x in its place. Fed to the critic as its real
    images, these carry the same mask noise as its fakes, so the noise alone cannot tell the two apart.
    With residual "logit" a masked pixel keeps its input, so only the clipping is left to match.
    """
    if residual == "logit":
        return x.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    if keep >= 1.0:
        return x
    return torch.where(_keep_mask(x, keep), x, torch.tanh(2 * x))


def _keep_mask(x: Tensor, keep: float) -> Tensor:
    """The mask delta ~ Bernoulli(keep) per pixel, shared by the channels, from torch's global stream (per rank)."""
    return torch.rand((x.shape[0], 1, *x.shape[2:]), device=x.device) < keep
