import pytest
import torch

from medsagan.errors import ConfigError
from medsagan.pseudo_anomalies import cut_paste, fpi_blend, make_pseudo_anomalies, other_images


def boxes(mask):
    """(top, left, height, width) of each image's box."""
    out = []
    for m in mask[:, 0]:
        rows, cols = m.nonzero(as_tuple=True)
        out.append(
            (
                rows.min().item(),
                cols.min().item(),
                rows.max().item() - rows.min().item() + 1,
                cols.max().item() - cols.min().item() + 1,
            )
        )
    return out


def test_fpi_changes_only_the_box_with_source_pixels_at_the_same_place():
    rng = torch.Generator().manual_seed(1)
    images = torch.rand(64, 1, 64, 64, generator=rng) * 0.5 - 1  # [-1, -0.5]: far from every source pixel
    sources = torch.rand(64, 1, 64, 64, generator=rng) * 0.5 + 0.5
    blended, mask = fpi_blend(images, rng, sources=sources)
    outside = mask == 0
    assert torch.equal(blended[outside.expand_as(blended)], images[outside.expand_as(images)])
    for i, (top, left, h, w) in enumerate(boxes(mask)):
        assert h == w  # square
        assert 6 <= h <= 24 and h % 2 == 0  # half-width in {3, ..., 12} at 64 px: [5 %, 20 %)
        centre_r, centre_c = top + h // 2, left + w // 2
        assert 12 <= centre_r <= 50 and 12 <= centre_c <= 50  # central 60 %
        box = (slice(None), slice(top, top + h), slice(left, left + w))
        # One alpha per image: blended = x + alpha (source - x) with the same alpha at every box pixel.
        alpha = (blended[i][box] - images[i][box]) / (sources[i][box] - images[i][box])
        assert alpha.min() >= 0 and alpha.max() <= 1
        assert torch.allclose(alpha, alpha.flatten()[0].expand_as(alpha), atol=1e-4)


def test_fpi_alpha_is_uniform_on_the_unit_interval():
    rng = torch.Generator().manual_seed(2)
    images, sources = torch.zeros(500, 1, 64, 64), torch.ones(500, 1, 64, 64)
    blended, mask = fpi_blend(images, rng, sources=sources)
    alpha = (blended * mask).flatten(1).amax(1)  # box value = alpha when x = 0 and source = 1
    assert alpha.min() < 0.02 and alpha.max() > 0.98
    assert abs(alpha.mean().item() - 0.5) < 0.05


def test_sources_are_always_other_images_of_the_batch():
    rng = torch.Generator().manual_seed(4)
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    for _ in range(20):
        assert (other_images(images, rng).flatten() != images.flatten()).all()


def test_fpi_is_reproducible_from_the_generator():
    images = torch.rand(8, 1, 32, 32)
    a = fpi_blend(images, torch.Generator().manual_seed(5))
    b = fpi_blend(images, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cutpaste_copies_a_region_of_the_same_image():
    rng = torch.Generator().manual_seed(3)
    images = torch.rand(16, 1, 32, 32)
    pasted, mask = cut_paste(images, rng)
    outside = (mask == 0).expand_as(images)
    assert torch.equal(pasted[outside], images[outside])
    for i, (top, left, h, w) in enumerate(boxes(mask)):
        patch = pasted[i, :, top : top + h, left : left + w]
        windows = images[i].unfold(1, h, 1).unfold(2, w, 1)  # every h x w window of the original
        assert (windows - patch[:, None, None]).abs().amax(dim=(0, 3, 4)).min() == 0
        assert 0.02 * 32 * 32 * 0.5 <= h * w <= 0.15 * 32 * 32 * 1.5


def test_methods_are_chosen_by_name():
    rng = torch.Generator().manual_seed(0)
    images = torch.rand(4, 1, 32, 32)
    assert make_pseudo_anomalies("cutpaste", images, rng)[0].shape == images.shape
    with pytest.raises(ConfigError, match="fpi, cutpaste"):
        make_pseudo_anomalies("perlin", images, rng)
