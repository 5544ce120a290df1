"""data.intensity: per-image normalisation, the same in training and in every inference path."""

import typing

import numpy as np
import pytest
import torch

from helpers import make_folder_dataset
from medsagan.config import DataConfig, Intensity, load_config
from medsagan.data.dataset import build_training_data, load_images
from medsagan.data.intensity import METHODS, normalise
from medsagan.data.readers import load_resized
from medsagan.data.sources import open_dataset
from medsagan.errors import ConfigError
from medsagan.inference import Detector


def radiograph(seed: int = 0, size: int = 64) -> np.ndarray:
    """A smooth bright body on a dark background with noise, uint8 [1, S, S]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    body = np.exp(-((yy - 0.5) ** 2 + (xx - 0.5) ** 2) / 0.08) * 170 + 30
    return np.clip(body + rng.normal(0, 8, body.shape), 0, 255).astype(np.uint8)[None]


def test_the_config_offers_exactly_the_implemented_methods():
    assert typing.get_args(Intensity) == METHODS
    assert DataConfig().intensity == "none"
    with pytest.raises(ConfigError, match=r"data\.intensity"):
        load_config(overrides={"data": {"intensity": "gamma"}})


def test_none_leaves_pixels_alone_and_every_method_keeps_shape_and_dtype():
    images = np.stack([radiograph(0), radiograph(1)])
    assert normalise(images, "none") is images
    for method in METHODS[1:]:
        out = normalise(images, method)
        assert out.dtype == np.uint8 and out.shape == images.shape
        assert not np.array_equal(out, images)
        np.testing.assert_array_equal(out[1], normalise(images[1], method))  # per image, not per batch


# CLAHE boosts local contrast, so it also boosts the noise, which rounds differently at the two exposures.
@pytest.mark.parametrize(("method", "shrink"), [("equalize", 10), ("clahe", 2), ("percentile", 10)])
def test_a_darker_exposure_of_the_same_image_normalises_to_nearly_the_same(method, shrink):
    image = radiograph(2)
    darker = np.rint(image * 0.55).astype(np.uint8)
    raw_gap = np.abs(image.astype(int) - darker).mean()
    gap = np.abs(normalise(image, method).astype(int) - normalise(darker, method)).mean()
    assert gap < raw_gap / shrink


def test_percentile_stretches_the_window_to_the_full_range_and_equalize_flattens_the_histogram():
    image = radiograph(3)
    stretched = normalise(image, "percentile")
    assert (stretched == 0).mean() == pytest.approx(0.01, abs=0.01)
    assert (stretched == 255).mean() == pytest.approx(0.01, abs=0.01)
    flat = normalise(image, "equalize")
    counts = np.histogram(flat, bins=4, range=(0, 256))[0] / flat.size
    np.testing.assert_allclose(counts, 0.25, atol=0.05)
    assert np.array_equal(normalise(np.full((1, 8, 8), 7, np.uint8), "percentile"), np.full((1, 8, 8), 7))


def test_training_and_the_inference_object_see_the_same_pixels(tmp_path):
    root = make_folder_dataset(tmp_path / "d", n=6)
    cfg = load_config(overrides={"data": {"path": str(root), "intensity": "clahe"}, "model": {"image_size": 32}})
    source = open_dataset(str(root))
    ids = source.pools["train/0"]
    loaded = load_images(source, ids, 0, 32, 1, cache_dir=tmp_path / "cache", intensity="clahe")
    detector = Detector(None, 32, 1, cfg, None, None)
    from_files = np.stack([detector.read(source.path_of(item)) for item in ids])
    np.testing.assert_array_equal(loaded.images.numpy(), from_files)
    with open(source.path_of(ids[0]), "rb") as handle:
        np.testing.assert_array_equal(detector.decode(handle.read(), "x.png"), from_files[0])
    raw = load_resized(source.path_of(ids[0]), 32, 1)
    assert not np.array_equal(raw, from_files[0])
    data = build_training_data(source, cfg, tmp_path / "cache")
    index = {item: i for i, item in enumerate(ids)}
    for i, item in enumerate(data.normal.ids):
        assert torch.equal(data.normal.images[i], loaded.images[index[item]])
