import pytest
import torch

from helpers import tiny_config
from medsagan import augment
from medsagan.distributed import World
from medsagan.errors import ConfigError
from medsagan.files import load_tensors
from medsagan.losses import SAGANLoss
from medsagan.train import fit


def images(n=6, size=16, seed=0):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_transform_that_does_not_apply_leaves_the_image_as_it_is():
    x = images()
    draws = augment.draw(6, torch.Generator().manual_seed(1))
    out = augment.apply(x, draws, augment.TRANSFORMS, probability=0.0)
    assert torch.allclose(out, x, atol=1e-6)


@pytest.mark.parametrize("name", augment.TRANSFORMS)
def test_each_transform_changes_every_image_and_passes_the_gradient(name):
    x = images().requires_grad_(True)
    out = augment.apply(x, augment.draw(6, torch.Generator().manual_seed(2)), (name,), probability=1.0)
    assert out.shape == x.shape
    changed = (out - x).detach().flatten(1).abs().amax(1)
    assert (changed > 1e-3).float().mean() >= 0.8  # a rare draw may land on no change (a shift of 0 px)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_translation_moves_whole_pixels_and_fills_with_black():
    x = images(n=1, size=16)
    draws = augment.draw(1, torch.Generator().manual_seed(3))
    out = augment.apply(x, draws, ("translation",), probability=1.0)[0, 0]
    # Some integer shift (dy, dx) reproduces the output exactly where the image still covers it.
    matches = []
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            shifted = torch.full_like(out, -1.0)
            src = x[0, 0][max(dy, 0) : 16 + min(dy, 0), max(dx, 0) : 16 + min(dx, 0)]
            shifted[max(-dy, 0) : 16 + min(-dy, 0), max(-dx, 0) : 16 + min(-dx, 0)] = src
            matches.append(torch.allclose(shifted, out, atol=1e-5))
    assert any(matches)


def test_the_draws_are_sharded_with_the_batch_so_ranks_apply_the_same_transforms():
    cfg = tiny_config(loss={"critic_augment": "translation,cutout"})
    loss = SAGANLoss(torch.nn.Identity(), torch.nn.Identity(), cfg.loss, torch.Generator().manual_seed(0))
    batch = loss.make_batch(images(4), images(4, seed=1))
    halves = [batch.shard(World(rank=r, size=2)) for r in (0, 1)]
    assert torch.equal(torch.cat([h.augment_real for h in halves]), batch.augment_real)
    assert torch.equal(torch.cat([h.augment_fake for h in halves]), batch.augment_fake)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"critic_augment": "flip"}, r"loss\.critic_augment: transform 'flip' is not offered"),
        ({"critic_augment_p": 0.0}, "critic_augment_p"),
        ({"image_augment": "cutout"}, r"loss\.image_augment: transform 'cutout' is not offered.*brightness"),
        ({"image_augment_p": 1.5}, "image_augment_p"),
    ],
)
def test_a_bad_augmentation_setting_is_refused_when_the_config_is_built(override, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(loss=override)


def test_a_run_with_an_augmented_critic_trains_other_weights(tmp_path):
    plain = fit(tiny_config(), tmp_path / "plain", progress=False)
    augmented = fit(tiny_config(loss={"critic_augment": "brightness,translation"}), tmp_path / "aug", progress=False)
    first, second = (load_tensors(r / "best.pt")["generator"] for r in (plain, augmented))
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_image_augmentation_changes_every_training_image_on_its_own_draw_and_keeps_the_pairs():
    cfg = tiny_config(loss={"image_augment": "brightness,translation", "image_augment_p": 1.0})
    loss = SAGANLoss(torch.nn.Identity(), torch.nn.Identity(), cfg.loss, torch.Generator().manual_seed(0))
    normal, unlabeled, sources = images(4), images(4, seed=1), images(4, seed=2)
    batch = loss.make_batch(normal, unlabeled, sources)
    for seen, given in ((batch.normal, normal), (batch.unlabeled, unlabeled)):
        assert ((seen - given).flatten(1).abs().amax(1) > 1e-3).all()
    # The pseudo-anomalies are made from the augmented normals, so restoring them aims at what the batch holds.
    outside = batch.pseudo_mask.expand_as(batch.pseudo) == 0
    assert torch.allclose(batch.pseudo[outside], batch.normal[outside], atol=1e-6)
    plain = SAGANLoss(torch.nn.Identity(), torch.nn.Identity(), tiny_config().loss, torch.Generator().manual_seed(0))
    assert torch.equal(plain.make_batch(normal, unlabeled, sources).normal, normal)


def test_a_run_with_augmented_training_images_trains_and_records_the_setting(tmp_path):
    run = fit(tiny_config(loss={"image_augment": "contrast,scale"}), tmp_path / "run", progress=False)
    assert "image_augment: contrast,scale" in (run / "config.yaml").read_text()
    assert (run / "best.pt").is_file()
