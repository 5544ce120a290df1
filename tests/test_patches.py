import pytest
import torch

from medsagan.models.patches import attach_codes, code_bits, merge_patches, position_codes, split_patches


@pytest.mark.parametrize(("patches", "size"), [(1, 32), (2, 64), (4, 64), (4, 128)])
def test_split_then_merge_is_identity(patches, size):
    x = torch.randn(3, 2, size, size)
    assert torch.equal(merge_patches(split_patches(x, patches), patches), x)


def test_split_is_row_major_and_image_major():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    tiles = split_patches(x, 2)
    assert tiles.shape == (8, 1, 2, 2)
    # Patch n = r*N + c of image b sits at b*N*N + n.
    assert torch.equal(tiles[1], x[0, :, 0:2, 2:4])  # image 0, top-right
    assert torch.equal(tiles[2], x[0, :, 2:4, 0:2])  # image 0, bottom-left
    assert torch.equal(tiles[7], x[1, :, 2:4, 2:4])  # image 1, bottom-right


def test_codes_for_two_by_two_are_msb_first_three_bits():
    assert code_bits(2) == 3
    expected = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]], dtype=torch.float32)
    assert torch.equal(position_codes(2), expected)


def test_codes_for_four_by_four():
    codes = position_codes(4)
    assert code_bits(4) == 5
    assert codes.shape == (16, 5)
    assert codes[5].tolist() == [0, 0, 1, 0, 1]
    assert codes[15].tolist() == [0, 1, 1, 1, 1]
    assert len({tuple(row.tolist()) for row in codes}) == 16
    assert set(codes.unique().tolist()) == {0.0, 1.0}


def test_single_patch_has_one_zero_bit():
    assert position_codes(1).tolist() == [[0.0]]


def test_codes_attached_as_constant_channels_after_features():
    features = torch.randn(8, 5, 3, 3)  # 2 images x 4 patches
    out = attach_codes(features, position_codes(2))
    assert out.shape == (8, 8, 3, 3)
    assert torch.equal(out[:, :5], features)
    assert torch.equal(out[6, 5:], torch.tensor([0.0, 1.0, 0.0])[:, None, None].expand(3, 3, 3))
