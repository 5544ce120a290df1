import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from medsagan.config import load_config
from medsagan.errors import ConfigError
from medsagan.models import (
    AnomalyDetector,
    BrainomalyGenerator,
    Critic,
    SAGANGenerator,
    build_critic,
    build_detector,
    build_generator,
    count_parameters,
)
from medsagan.models.blocks import AttentionGate, DecoderBlock


def small(**kwargs):
    options = {"image_size": 32, "conv_dim": 4, "residual_blocks": 1}
    options.update(kwargs)
    return SAGANGenerator(**options)


def test_paper_preset_parameter_counts_match_the_official_layer_tables():
    cfg = load_config(preset="paper").model
    assert count_parameters(build_generator(cfg)) == 44_758_979
    assert count_parameters(build_critic(cfg)) == 44_719_040


def test_train_mode_masks_the_additive_map_and_eval_mode_does_not():
    torch.manual_seed(0)
    generator = small(mask_keep=0.5)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        additive = generator.additive_map(x)
        unmasked = torch.tanh(additive + x)
        generator.train()
        trained = generator(x)
        generator.eval()
        evaluated = generator(x)
    assert torch.allclose(evaluated, unmasked, atol=1e-6)
    # Masked pixels equal tanh(2x): the map was replaced by the input there.
    masked = ~torch.isclose(trained, unmasked, atol=1e-6)
    assert 0.3 < masked.float().mean() < 0.7
    assert torch.allclose(trained[masked], torch.tanh(2 * x)[masked], atol=1e-6)


def test_eval_output_is_repeatable_and_independent_of_the_batch():
    torch.manual_seed(0)
    detector = AnomalyDetector(small()).eval()
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        first, second = detector(x), detector(x)
        alone = detector(x[2:3])
    assert torch.equal(first.score, second.score)
    assert torch.equal(first.restored, second.restored)
    assert torch.allclose(alone.restored[0], first.restored[2], atol=1e-6)
    assert torch.allclose(alone.score[0], first.score[2], atol=1e-7)


def test_outputs_lie_in_minus_one_one_and_score_is_mean_half_l1():
    detector = AnomalyDetector(small())
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    result = detector(x)
    assert result.restored.min() >= -1 and result.restored.max() <= 1
    assert torch.allclose(result.score, ((x - result.restored).abs() / 2).mean(dim=(1, 2, 3)))
    assert result.anomaly_map.shape == (3, 1, 32, 32)


def test_map_sigma_blurs_the_map_as_scipy_does_and_leaves_the_score_and_weights_alone():
    torch.manual_seed(0)
    generator = small().eval()
    plain = AnomalyDetector(generator)
    blurred = build_detector(load_config(overrides={"model": {"map_sigma": 2.0, "image_size": 32}}).model, generator)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        raw, smooth = plain(x), blurred(x)
    expected = np.stack([gaussian_filter(m[0], 2.0, mode="mirror") for m in raw.anomaly_map.numpy()])
    np.testing.assert_allclose(smooth.anomaly_map[:, 0].numpy(), expected, atol=1e-6)
    assert smooth.anomaly_map.std() < raw.anomaly_map.std()
    assert torch.equal(smooth.score, raw.score)
    assert torch.equal(smooth.restored, raw.restored)
    assert blurred.state_dict().keys() == plain.state_dict().keys()  # a blurred run loads the same weights


@pytest.mark.parametrize(("size", "patches"), [(32, 1), (32, 2), (64, 1), (64, 2), (64, 4), (128, 4), (256, 2)])
def test_supported_sizes_build_and_run(size, patches):
    generator = small(image_size=size, patches=patches, conv_dim=2)
    x = torch.zeros(1, 1, size, size)
    assert generator(x).shape == x.shape


def test_impossible_size_is_refused_with_the_sizes_that_work():
    with pytest.raises(ConfigError, match=r"32 px with patches 1, 2;.*64 px with patches 1, 2, 4"):
        small(image_size=32, patches=4)
    with pytest.raises(ConfigError, match="impossible"):
        small(image_size=60, patches=2)


def test_three_channels_in_and_out():
    generator = small(channels=3)
    critic = Critic(32, 3, conv_dim=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert generator(x).shape == (2, 3, 32, 32)
    assert critic(x).shape == (2, 1, 1, 1)


def test_acm_switch_removes_codes_fuses_and_patches():
    with_acm, without = small(patches=2), small(patches=2, acm=False)
    assert with_acm.patches == 2 and without.patches == 1
    assert hasattr(with_acm, "fuse1") and not hasattr(without, "fuse1")
    assert with_acm.bottleneck[0][0].in_channels == 32 + 3  # 8 * conv_dim + K code bits
    assert without.bottleneck[0].__class__.__name__ == "ResidualBlock"
    assert count_parameters(without) < count_parameters(with_acm)


def test_arrm_switch_removes_gates_decoder_blocks_and_fusion():
    with_arrm, without = small(), small(arrm=False)
    kinds = lambda g: {type(m) for m in g.modules()}  # noqa: E731
    assert AttentionGate in kinds(with_arrm) and DecoderBlock in kinds(with_arrm)
    assert AttentionGate not in kinds(without) and DecoderBlock not in kinds(without)
    assert not hasattr(without, "fusion")
    assert without(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_baseline_is_brainomaly_without_mask_or_patches():
    cfg = load_config(preset="baseline").model
    generator = build_generator(cfg)
    assert isinstance(generator, BrainomalyGenerator)
    assert not any(isinstance(m, AttentionGate) for m in generator.modules())
    generator.train()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(generator(x), generator.eval()(x))  # no random mask


def test_attention_gate_scales_only_the_skip_by_coefficients_in_unit_range():
    gate = AttentionGate(6, 4, 3)
    gating, skip = torch.randn(2, 6, 5, 5), torch.randn(2, 4, 5, 5)
    alpha = gate.attention(gating, skip)
    assert alpha.shape == (2, 1, 5, 5)
    assert alpha.min() >= 0 and alpha.max() <= 1
    assert torch.allclose(gate(gating, skip), skip * alpha)


def test_critic_depth_adapts_to_image_size():
    assert Critic(64, 1, 4)(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 1, 1)
    assert Critic(32, 1, 4)(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 1, 1)
    assert Critic(128, 1, 4)(torch.zeros(1, 1, 128, 128)).shape == (1, 1, 2, 2)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._NormBase) for m in Critic(64).modules())


def test_critic_slope_sets_how_much_gradient_an_off_unit_passes():
    from medsagan.models import build_critic

    torch.manual_seed(0)
    official, leaky = (
        Critic(64, 1, 4),
        build_critic(load_config(overrides={"model": {"d_conv_dim": 4, "d_slope": 0.2}}).model),
    )
    leaky.load_state_dict(official.state_dict())  # the same weights; only the activations differ
    assert {m.negative_slope for m in leaky.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.2}
    # A critic whose units are all off (every bias far below zero) passes slope**6 of its input gradient.
    for critic in (official, leaky):
        with torch.no_grad():
            for m in critic.main:
                if isinstance(m, torch.nn.Conv2d):
                    m.bias.fill_(-100.0)
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    norms = [torch.autograd.grad(c(x).sum(), x)[0].norm() for c in (official, leaky)]
    assert norms[1] / norms[0] == pytest.approx(20.0**6, rel=1e-3)


def test_instance_norm_is_torchs_instance_norm_without_running_statistics():
    from medsagan.models.blocks import InstanceNorm

    x = torch.randn(3, 5, 7, 7) * 3 + 1
    ours, reference = InstanceNorm(5), torch.nn.InstanceNorm2d(5, affine=True)
    with torch.no_grad():
        ours.weight.normal_()
        ours.bias.normal_()
    reference.load_state_dict(ours.state_dict())
    assert torch.allclose(ours(x), reference(x), atol=1e-5)
    assert torch.allclose(
        InstanceNorm(1, affine=False)(x[:, :1]), torch.nn.functional.instance_norm(x[:, :1]), atol=1e-5
    )
    assert not list(ours.buffers())


def test_scores_are_bit_identical_whatever_is_scored_with_them():
    from medsagan.evaluate.scoring import score_images

    torch.manual_seed(0)
    detector = AnomalyDetector(small())
    images = torch.randint(0, 256, (45, 1, 32, 32), dtype=torch.uint8)
    together = score_images(detector, images, keep_maps=True)
    assert torch.equal(torch.from_numpy(together.scores), torch.from_numpy(score_images(detector, images).scores))
    for part in (images[:1], images[7:30], images[40:]):
        alone = score_images(detector, part).scores
        start = next(i for i in range(45) if torch.equal(images[i], part[0]))
        assert (alone == together.scores[start : start + len(part)]).all()
    assert detector.training  # scoring restores the mode it found


def test_resize_upsampling_replaces_every_transposed_conv_and_draws_no_checkerboard():
    from torch import nn

    for architecture in ("sagan", "baseline"):
        overrides = {"model": {"architecture": architecture, "upsample": "resize"}}
        generator = build_generator(load_config(preset="fast", overrides=overrides).model).eval()
        assert not any(isinstance(m, nn.ConvTranspose2d) for m in generator.modules())
        assert any(isinstance(m, nn.Upsample) for m in generator.modules())
    # A flat image through a stride-2 transposed conv with random weights: even and odd output pixels sum
    # different kernel taps, so it comes out as a checkerboard; doubling then a 3x3 conv keeps it flat.
    torch.manual_seed(0)
    x = torch.ones(1, 1, 8, 8)
    transposed = nn.ConvTranspose2d(1, 1, 4, 2, 1, bias=False)
    resized = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(1, 1, 3, 1, 1, bias=False))
    inner = (0, 0, slice(2, -2), slice(2, -2))
    with torch.no_grad():
        checkerboard, flat = transposed(x)[inner], resized(x)[inner]
    assert checkerboard.std() > 1e-3 and checkerboard[::2, ::2].std() < 1e-6  # a period-2 pattern
    assert flat.std() < 1e-6
    assert load_config().model.upsample == "transposed"  # the paper keeps the official layers


def test_a_logit_residual_makes_a_zero_map_the_identity_and_a_masked_pixel_keep_its_input():
    from medsagan.models.blocks import LOGIT_LIMIT, perfectly_restored, restore

    torch.manual_seed(0)
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    x[0, 0, 0] = -1.0  # a saturated background row: no finite map reproduces it with the paper's residual
    zero = torch.zeros_like(x)
    # The paper's x' = tanh(map + x) turns a zero map into tanh(x); the logit residual returns x.
    assert torch.allclose(restore(zero, x, 1.0, training=False), torch.tanh(x))
    kept = restore(zero, x, 1.0, training=False, residual="logit")
    assert torch.allclose(kept, x.clamp(-LOGIT_LIMIT, LOGIT_LIMIT), atol=1e-6)
    assert (kept - x).abs().max() <= 1e-3 + 1e-6
    # In training the mask drops the map: a dropped pixel keeps its input, a kept one moves.
    torch.manual_seed(1)
    moved = restore(torch.ones_like(x), x, 0.5, training=True, residual="logit")
    dropped = torch.isclose(moved, x.clamp(-LOGIT_LIMIT, LOGIT_LIMIT), atol=1e-6)
    assert 0.35 < dropped.float().mean() < 0.65
    assert (moved[~dropped] > x[~dropped]).all()
    # A perfect restoration under the mask is the input, so the critic's real images need no mask noise.
    assert torch.equal(perfectly_restored(x, 0.95, "logit"), x.clamp(-LOGIT_LIMIT, LOGIT_LIMIT))
    # Both generators take the option; the paper keeps its residual.
    for architecture in ("sagan", "baseline"):
        overrides = {"model": {"architecture": architecture, "residual": "logit"}}
        generator = build_generator(load_config(preset="fast", overrides=overrides).model).eval()
        assert generator.residual == "logit"
        out = generator(x)
        assert out.shape == x.shape and out.abs().max() <= 1
    assert load_config().model.residual == "input"


def test_the_machine_is_named_by_its_cpu_model_vector_unit_and_bfloat16():
    from pathlib import Path

    from medsagan.devices import cpu_model, machine_name, native_bfloat16

    name = machine_name(torch.device("cpu"))
    assert name.startswith(cpu_model()) and torch.backends.cpu.get_cpu_capability() in name
    assert name.endswith("no bfloat16)") != native_bfloat16(torch.device("cpu"))
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        assert cpu_model() in cpuinfo.read_text() and cpu_model() not in ("x86_64", "aarch64")
