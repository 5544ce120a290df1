"""Patch split and the binary position codes of the anatomical consistency module (ACM, paper Sec. 2.2)."""

import math

import torch
from torch import Tensor


def code_bits(patches: int) -> int:
    """K = floor(log2(N*N)) + 1, the number of bits of a patch position code.

    The paper writes ceil(log2(N*N) + 1); the official code uses floor. Both give 3 bits for the
    paper's N = 2; floor is what the released models were trained with.
    """
    return math.floor(math.log2(patches * patches)) + 1


def position_codes(patches: int) -> Tensor:
    """[N*N, K] float tensor: row n is the binary code of patch n, most significant bit first, in {0, 1}."""
    bits = code_bits(patches)
    index = torch.arange(patches * patches).unsqueeze(1)
    weights = 2 ** torch.arange(bits - 1, -1, -1)
    return ((index // weights) % 2).float()


def split_patches(x: Tensor, patches: int) -> Tensor:
    """[B, C, H, W] -> [B*N*N, C, H/N, W/N], non-overlapping, row-major: patch n = r*N + c of image b at b*N*N + n."""
    if patches == 1:
        return x
    b, c, h, w = x.shape
    ph, pw = h // patches, w // patches
    tiles = x.reshape(b, c, patches, ph, patches, pw).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(b * patches * patches, c, ph, pw)


def merge_patches(tiles: Tensor, patches: int) -> Tensor:
    """Exact inverse of `split_patches`."""
    if patches == 1:
        return tiles
    n, c, ph, pw = tiles.shape
    b = n // (patches * patches)
    grid = tiles.reshape(b, patches, patches, c, ph, pw).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, c, patches * ph, patches * pw)


def attach_codes(features: Tensor, codes: Tensor) -> Tensor:
    """Concatenate each patch's K code bits as constant channels after its feature channels."""
    n, _, h, w = features.shape
    per_patch = codes.to(features.dtype).repeat(n // codes.shape[0], 1)
    return torch.cat([features, per_patch[:, :, None, None].expand(-1, -1, h, w)], dim=1)
