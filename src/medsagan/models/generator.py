"""The SAGAN generator (paper Sec. 2, Fig. 2; Generator in zzr728/SAGAN model.py, 2fa5bd7).

Per patch: a three-level encoder with position codes (ACM), a residual bottleneck, a decoder whose
U-Net skips are gated by attention and whose three levels are fused (ARRM), and a 7x7 conv to the
additive map. Patches are merged back and x' = tanh(map + x).
"""

import torch
from torch import Tensor, nn

from ..geometry import check_geometry
from .blocks import AttentionGate, DecoderBlock, ResidualBlock, conv_norm_relu, down, position_fuse, restore, up
from .patches import attach_codes, code_bits, merge_patches, position_codes, split_patches


class SAGANGenerator(nn.Module):
    """Restores an image to a healthy-looking one.

    Args:
        image_size: side of the square input, in pixels.
        channels: 1 for grey radiographs, 3 for colour fundus photos.
        patches: N, the image is cut into N x N patches (official default 2).
        conv_dim: width of the first layer; each encoder level doubles it (official 64).
        residual_blocks: residual blocks in the bottleneck (official 6).
        acm: patch split and position codes; False processes the whole image without codes.
        arrm: attention-gated skips, decoder blocks and multi-level fusion; False decodes straight up.
        mask_keep: keep probability p of the training-time Bernoulli mask (paper Eq. 1; official 0.95).
        upsample: "transposed" (official 4x4 stride-2 transposed convs) or "resize" (doubling, then a 3x3 conv).
        residual: "input", x' = tanh(map + x) (paper Eq. 2), or "logit", x' = tanh(map + atanh(x)).

    Shapes: x [B, C, S, S] in [-1, 1] -> x' [B, C, S, S] in [-1, 1].
    """

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 1,
        patches: int = 2,
        conv_dim: int = 64,
        residual_blocks: int = 6,
        acm: bool = True,
        arrm: bool = True,
        mask_keep: float = 0.95,
        upsample: str = "transposed",
        residual: str = "input",
    ):
        super().__init__()
        self.patches = patches if acm else 1
        check_geometry(image_size, self.patches)
        self.acm, self.arrm, self.mask_keep, self.residual = acm, arrm, mask_keep, residual
        c1, c2, c3 = conv_dim * 2, conv_dim * 4, conv_dim * 8

        # Encoder; with ACM each level's output gets the patch's code and is fused back to its width.
        self.stem = conv_norm_relu(channels, conv_dim, 7, 1, 3)
        self.encoder1, self.encoder2, self.encoder3 = down(conv_dim, c1), down(c1, c2), down(c2, c3)
        if acm:
            bits = code_bits(self.patches)
            self.register_buffer("codes", position_codes(self.patches), persistent=False)
            self.fuse1, self.fuse2 = position_fuse(c1, bits), position_fuse(c2, bits)
            bottleneck_entry = [position_fuse(c3, bits)]
        else:
            self.codes = None
            bottleneck_entry = []
        self.bottleneck = nn.Sequential(*bottleneck_entry, *(ResidualBlock(c3) for _ in range(residual_blocks)))

        # Decoder: three up-sampling levels; ARRM adds gates on the skips, decoder blocks and fusion.
        self.up1, self.up2, self.up3 = up(c3, c2, upsample), up(c2, c1, upsample), up(c1, conv_dim, upsample)
        if arrm:
            self.gate1, self.block1 = AttentionGate(c3, c3, c3 // 2), DecoderBlock(2 * c3, c3)
            self.gate2, self.block2 = AttentionGate(c2, c2, c2 // 2), DecoderBlock(2 * c2, c2)
            self.gate3, self.block3 = AttentionGate(c1, c1, c1 // 2), DecoderBlock(2 * c1, c1)
            self.lift1 = nn.Sequential(up(c2, c1, upsample), up(c1, conv_dim, upsample))
            self.lift2 = up(c1, conv_dim, upsample)
            self.fusion = DecoderBlock(3 * conv_dim, conv_dim)
        self.to_map = nn.Conv2d(conv_dim, channels, 7, 1, 3, bias=False)

    def _encode(self, tiles: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        e1 = self.encoder1(self.stem(tiles))
        if self.acm:
            e1 = self.fuse1(attach_codes(e1, self.codes))
        e2 = self.encoder2(e1)
        if self.acm:
            e2 = self.fuse2(attach_codes(e2, self.codes))
        e3 = self.encoder3(e2)
        if self.acm:
            e3 = attach_codes(e3, self.codes)
        return e1, e2, self.bottleneck(e3)

    def _decode(self, e1: Tensor, e2: Tensor, z: Tensor) -> Tensor:
        if not self.arrm:
            return self.up3(self.up2(self.up1(z)))
        # The deepest gate attends the bottleneck to itself: the official code never uses the raw level-3 skip.
        d1 = self.up1(self.block1(cat(z, self.gate1(z, z))))
        d2 = self.up2(self.block2(cat(d1, self.gate2(d1, e2))))
        d3 = self.up3(self.block3(cat(d2, self.gate3(d2, e1))))
        return self.fusion(cat(self.lift1(d1), self.lift2(d2), d3))

    def additive_map(self, x: Tensor) -> Tensor:
        """I(x): the unbounded map that is added to x before tanh, [B, C, S, S]."""
        e1, e2, z = self._encode(split_patches(x, self.patches))
        return merge_patches(self.to_map(self._decode(e1, e2, z)), self.patches)

    def forward(self, x: Tensor) -> Tensor:
        """The restoration x' = tanh(map + x), the random mask on the map in training mode (paper Eq. 1)."""
        return restore(self.additive_map(x), x, self.mask_keep, self.training, self.residual)


def cat(*tensors: Tensor) -> Tensor:
    """Concatenate on channels, decoder feature first, as the official order [gating, gated skip]."""
    return torch.cat(tensors, dim=1)
