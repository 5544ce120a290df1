import torch
from torch import nn

from medsagan.config import LossConfig
from medsagan.losses import Batch, SAGANLoss, gradient_penalty


class Linear(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor, b: float = 0.3):
        super().__init__()
        self.w, self.b = nn.Parameter(w), b

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1) + self.b


class Half(nn.Module):
    def forward(self, x):
        return 0.5 * x


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    w = torch.tensor([[[[1.0, 2.0], [2.0, 4.0]]]])  # ||w|| = 5
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    penalty = gradient_penalty(Linear(w), real, fake, torch.rand(3))
    assert torch.isclose(penalty, torch.tensor(16.0))


def test_gradient_penalty_uses_one_mix_per_sample():
    quadratic = lambda x: 0.5 * (x**2).flatten(1).sum(1)  # noqa: E731  grad = x_hat

    class Quadratic(nn.Module):
        def forward(self, x):
            return quadratic(x)

    real, fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    mix = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x_hat = mix.view(-1, 1, 1, 1) * real + (1 - mix.view(-1, 1, 1, 1)) * fake
    expected = ((x_hat.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert torch.isclose(gradient_penalty(Quadratic(), real, fake, mix), expected)


def test_critic_and_generator_losses_follow_equations_3_to_7():
    w = torch.full((1, 1, 4, 4), 0.25)  # ||w|| = 1, so the penalty vanishes
    critic, generator = Linear(w, b=0.0), Half()
    cfg = LossConfig(lambda_id=2.0, lambda_rec=3.0, lambda_gp=10.0)
    loss = SAGANLoss(generator, critic, cfg, torch.Generator().manual_seed(0))
    normal, unlabeled = torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)
    pseudo = normal.flip(0)
    batch = Batch(normal, unlabeled, pseudo, torch.zeros(4, 1, 4, 4), torch.rand(4))

    d_loss, d_stats = loss.critic_loss(batch)
    d = lambda x: critic(x).mean()  # noqa: E731
    assert torch.isclose(d_loss, d(0.5 * unlabeled) - d(normal), atol=1e-6)
    assert abs(d_stats["D/gp"].item()) < 1e-10

    g_loss, g_stats = loss.generator_loss(batch)
    adversarial = -d(0.5 * unlabeled)
    identity = (0.5 * normal - normal).abs().mean()
    restoration = ((0.5 * pseudo - normal) ** 2).mean()
    assert torch.isclose(g_loss, adversarial + 2.0 * identity + 3.0 * restoration, atol=1e-6)
    assert abs(g_stats["G/identity"].item() - identity.item()) < 1e-6
    weighted = SAGANLoss(generator, critic, LossConfig(lambda_adv=0.25, lambda_id=2.0, lambda_rec=3.0), loss.rng)
    g_weighted, _ = weighted.generator_loss(batch)
    assert torch.isclose(g_weighted, 0.25 * adversarial + 2.0 * identity + 3.0 * restoration, atol=1e-6)


def test_critic_step_does_not_backpropagate_into_the_generator():
    generator = nn.Conv2d(1, 1, 1)
    critic = Linear(torch.randn(1, 1, 4, 4))
    loss = SAGANLoss(generator, critic, LossConfig(), torch.Generator().manual_seed(0))
    batch = loss.make_batch(torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4))
    d_loss, _ = loss.critic_loss(batch)
    d_loss.backward()
    assert generator.weight.grad is None
    assert critic.w.grad is not None


def test_without_unlabelled_images_pseudo_anomalies_are_the_fakes():
    loss = SAGANLoss(Half(), Linear(torch.randn(1, 1, 8, 8)), LossConfig(), torch.Generator().manual_seed(0))
    normal = torch.rand(4, 1, 8, 8)
    batch = loss.make_batch(normal, torch.zeros(0, 1, 8, 8))
    assert torch.equal(batch.unlabeled, batch.pseudo)


def test_the_critic_can_see_real_normals_through_the_generators_training_mask():
    from medsagan.models.blocks import perfectly_restored

    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    noisy = perfectly_restored(x, 0.95)
    changed = ~torch.isclose(noisy, x)
    # About 5 % of pixels, each replaced by what the mask makes of it in the generator: tanh(2x).
    assert 0.03 < changed.float().mean() < 0.07
    assert torch.allclose(noisy[changed], torch.tanh(2 * x)[changed])
    assert torch.equal(perfectly_restored(x, 1.0), x)
    # A generator that restores x exactly produces the same noise, so the two share their statistics.
    identity = torch.atanh(x.clamp(-0.999, 0.999)) - x
    from medsagan.models.blocks import restore

    torch.manual_seed(1)
    restored = restore(identity, x, 0.95, training=True)
    torch.manual_seed(1)
    assert torch.allclose(restored, perfectly_restored(x, 0.95), atol=2e-3)

    # With the option on, the critic loss scores the noisy normals as its real images.
    class Masked(Half):
        mask_keep = 0.95

    w = torch.full((1, 1, 16, 16), 1 / 16)  # ||w|| = 1
    loss = SAGANLoss(Masked(), Linear(w, b=0.0), LossConfig(critic_real_mask=True), torch.Generator().manual_seed(0))
    batch = Batch(x, x, x, torch.zeros_like(x), torch.rand(64))
    torch.manual_seed(2)
    d_loss, _ = loss.critic_loss(batch)
    torch.manual_seed(2)
    real = perfectly_restored(x, 0.95)
    d = lambda t: Linear(w, b=0.0)(t).mean()  # noqa: E731
    assert torch.isclose(d_loss, d(0.5 * x) - d(real), atol=1e-5)
    assert not torch.isclose(d_loss, d(0.5 * x) - d(x), atol=1e-5)


def test_a_lazy_penalty_is_left_out_or_weighted_by_its_interval():
    critic, generator = Linear(torch.randn(1, 1, 4, 4)), Half()
    lazy = SAGANLoss(generator, critic, LossConfig(lambda_gp=10.0, gp_every=4), torch.Generator().manual_seed(0))
    every = SAGANLoss(generator, critic, LossConfig(lambda_gp=10.0), torch.Generator().manual_seed(0))
    images = [torch.rand(4, 1, 4, 4) for _ in range(3)]
    batch = Batch(*images, torch.zeros(4, 1, 4, 4), torch.rand(4))
    skipped, skipped_stats = lazy.critic_loss(batch, penalize=False)
    full, full_stats = every.critic_loss(batch)
    assert "D/gp" not in skipped_stats
    assert torch.isclose(skipped, full_stats["D/wasserstein"])
    penalised, _ = lazy.critic_loss(batch, penalize=True)
    assert torch.isclose(penalised, full_stats["D/wasserstein"] + 40.0 * full_stats["D/gp"])
    assert torch.isclose(full, full_stats["D/wasserstein"] + 10.0 * full_stats["D/gp"])


def test_a_patch_restoration_term_averages_the_error_over_each_box_only():
    cfg = LossConfig(restoration_region="patch")
    loss = SAGANLoss(Half(), Linear(torch.full((1, 1, 4, 4), 0.25), b=0.0), cfg, torch.Generator().manual_seed(0))
    normal = torch.rand(2, 1, 4, 4)
    pseudo = normal + 0.5
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, :1, :1] = 1  # one pixel
    mask[1, :, :2, :] = 1  # half the image
    batch = Batch(normal, torch.rand(2, 1, 4, 4), pseudo, mask, torch.rand(2))
    restored = 0.5 * pseudo
    error = (restored - normal) ** 2
    expected = (error[0, 0, 0, 0] + error[1, 0, :2].mean()) / 2
    assert torch.isclose(loss.restoration(restored, batch), expected)
    image = SAGANLoss(Half(), loss.critic, LossConfig(), loss.rng).restoration(restored, batch)
    assert torch.isclose(image, error.mean())


def test_the_smoothness_term_charges_speckle_and_not_a_repainted_region():
    from medsagan.losses import total_variation

    region = torch.zeros(1, 1, 16, 16)
    region[..., 4:12, 4:12] = 0.5  # one repainted square: only its edge costs
    speckle = torch.zeros(1, 1, 16, 16)
    speckle[..., ::2, ::2] = 0.5  # the same pixels' worth of change, scattered
    assert total_variation(torch.zeros(1, 1, 16, 16)) == 0
    assert total_variation(speckle) > 3 * total_variation(region)
    assert torch.isclose(total_variation(region), torch.tensor(2 * 0.5 * 16 / (16 * 15)))

    # The generator loss adds lambda_tv times the variation of x' - x over unlabelled images and pseudo-anomalies.
    normal, unlabeled = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    batch = Batch(normal, unlabeled, normal.flip(0), torch.zeros(4, 1, 8, 8), torch.rand(4))
    critic = Linear(torch.randn(1, 1, 8, 8))
    plain, stats = SAGANLoss(Half(), critic, LossConfig(), torch.Generator()).generator_loss(batch)
    assert "G/smoothness" not in stats
    smooth, stats = SAGANLoss(Half(), critic, LossConfig(lambda_tv=2.0), torch.Generator()).generator_loss(batch)
    expected = total_variation(torch.cat([-0.5 * unlabeled, -0.5 * normal.flip(0)]))
    assert torch.isclose(stats["G/smoothness"], expected)
    assert torch.isclose(smooth, plain + 2.0 * expected)
