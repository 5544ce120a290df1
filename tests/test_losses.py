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
