"""The SAGAN objective (paper Eq. 3-7; zzr728/SAGAN solver.py at 2fa5bd7).

A WGAN-GP critic, and a generator trained by the adversarial term, the identity L1 on normals and the MSE
restoring pseudo-anomalies to their normals.
"""

from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.nn import functional

from . import augment
from .config import LossConfig
from .models.blocks import perfectly_restored
from .pseudo_anomalies import configured_pseudo_anomalies


def total_variation(change: Tensor) -> Tensor:
    """Mean absolute difference of neighbouring pixels (rows and columns) of `change` [B, C, S, S]."""
    rows = (change[..., 1:, :] - change[..., :-1, :]).abs().mean()
    return rows + (change[..., 1:] - change[..., :-1]).abs().mean()


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, mix: Tensor) -> Tensor:
    """E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat = mix * real + (1 - mix) * fake, one mix per sample ([B])."""
    mix = mix.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


@dataclass
class Batch:
    """One training step's images, all [B, C, S, S] in [-1, 1].

    normal: labelled normals x_n; unlabeled: the normal/abnormal mixture x_u; pseudo: pseudo-anomalies x_p
    made from `normal`, with their box mask; mix: the gradient penalty's interpolation weight per pair;
    augment_real, augment_fake: the critic augmentation's draws for the normals and the unlabelled restorations.
    """

    normal: Tensor
    unlabeled: Tensor
    pseudo: Tensor
    pseudo_mask: Tensor
    mix: Tensor
    augment_real: Tensor | None = None
    augment_fake: Tensor | None = None

    def shard(self, world) -> "Batch":
        """The slice of a global batch that one training process computes (distributed.World)."""
        parts = (getattr(self, f.name) for f in fields(self))
        return Batch(*(None if t is None else world.shard(t) for t in parts))


class SAGANLoss:
    """Owns the objective; the training loop only calls `critic_loss` and `generator_loss` and steps.

    Args:
        generator, critic: the networks.
        cfg: the loss weights and the pseudo-anomaly method.
        rng: drives the pseudo-anomalies and the gradient-penalty mixing.
    """

    def __init__(self, generator: nn.Module, critic: nn.Module, cfg: LossConfig, rng: torch.Generator):
        self.generator, self.critic, self.cfg, self.rng = generator, critic, cfg, rng
        self.policy = augment.parse_policy(cfg.critic_augment)
        self.image_policy = augment.parse_policy(cfg.image_augment, "loss.image_augment", augment.IMAGE_TRANSFORMS)

    def seen_by_critic(self, images: Tensor, draws: Tensor | None) -> Tensor:
        """What the critic is shown of `images`: themselves, or their augmentation when one is configured."""
        if draws is None:
            return images
        return augment.apply(images, draws, self.policy, self.cfg.critic_augment_p)

    def make_batch(self, normal: Tensor, unlabeled: Tensor, sources: Tensor | None = None) -> Batch:
        """The step's images, pseudo-anomalies included.

        FPI blends each normal with `sources` (other labelled normals, one per image), or with another image of
        the batch when none are given. With `image_augment` every image is first augmented on its own draw.
        """
        if self.image_policy:
            normal, unlabeled = self.augmented(normal), self.augmented(unlabeled)
            sources = self.augmented(sources) if sources is not None else None
        pseudo, mask = configured_pseudo_anomalies(self.cfg, normal, self.rng, sources)
        if unlabeled.shape[0] == 0:
            # Paper Table 4 "0_u": with no unlabelled images the pseudo-anomalies play their part.
            unlabeled = pseudo
        n = min(normal.shape[0], unlabeled.shape[0])
        mix = torch.rand(n, generator=self.rng, device=self.rng.device).to(normal.device)
        draws = (None, None)
        if self.policy:
            draws = (augment.draw(normal.shape[0], self.rng), augment.draw(unlabeled.shape[0], self.rng))
        return Batch(normal, unlabeled, pseudo, mask, mix, *draws)

    def augmented(self, images: Tensor) -> Tensor:
        """`images` under the training images' augmentation, one draw each."""
        draws = augment.draw(images.shape[0], self.rng)
        return augment.apply(images, draws, self.image_policy, self.cfg.image_augment_p)

    def restoration(self, restored_p: Tensor, batch: Batch) -> Tensor:
        """L_rec: the squared error of restored pseudo-anomalies against their normals.

        Averaged over the image (Eq. 4) or, with restoration_region "patch", over each one's box, then the batch.
        """
        if self.cfg.restoration_region == "image":
            return functional.mse_loss(restored_p, batch.normal)
        mask = batch.pseudo_mask.to(restored_p.dtype).expand_as(restored_p).flatten(1)
        error = (restored_p.float() - batch.normal.float()).pow(2).flatten(1)
        return ((error * mask).sum(1) / mask.sum(1).clamp_min(1.0)).mean()

    def restorations(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """x'_u, x'_n, x'_p with gradients, through the generator as one batch.

        InstanceNorm works per image, so this is the same function as three passes, at a third of the calls.
        """
        sizes = [batch.unlabeled.shape[0], batch.normal.shape[0], batch.pseudo.shape[0]]
        return self.generator(torch.cat([batch.unlabeled, batch.normal, batch.pseudo])).split(sizes)

    def critic_loss(
        self, batch: Batch, fake: Tensor | None = None, penalize: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_adv^D = E[D(x'_u)] - E[D(x_n)] + lambda_gp * GP (Eq. 7): real = normals, fake = restored unlabelled.

        With `critic_real_mask` the real normals carry the generator's training-mask noise as the fakes do.

        `fake`: x'_u already restored by the current generator (detached); restored here when not given.
        `penalize`: False leaves the penalty out of this step. With `gp_every` = k the loop penalises every k-th
        step and the penalty weighs k times as much, so its average pull stays lambda_gp (lazy regularisation,
        Karras et al. 2020, StyleGAN2).
        """
        if fake is None:
            with torch.no_grad():
                fake = self.generator(batch.unlabeled)
        real = batch.normal
        if self.cfg.critic_real_mask:
            real = perfectly_restored(
                real, getattr(self.generator, "mask_keep", 1.0), getattr(self.generator, "residual", "input")
            )
        real, fake = self.seen_by_critic(real, batch.augment_real), self.seen_by_critic(fake, batch.augment_fake)
        wasserstein = self.critic(fake).mean() - self.critic(real).mean()
        stats = {"D/wasserstein": wasserstein.detach()}
        loss = wasserstein
        if penalize:
            n = batch.mix.shape[0]
            penalty = gradient_penalty(self.critic, real[:n], fake[:n], batch.mix)
            loss = loss + self.cfg.lambda_gp * self.cfg.gp_every * penalty
            stats["D/gp"] = penalty.detach()
        stats["D/loss"] = loss.detach()
        return loss, stats

    def generator_loss(
        self, batch: Batch, restored: tuple[Tensor, Tensor, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L^G = lambda_adv * L_adv + lambda_id * L_id + lambda_rec * L_rec (Eq. 3-6; the paper's lambda_adv is 1).

        With lambda_tv > 0, plus lambda_tv times the total variation of what the generator changes in the
        unlabelled images and the pseudo-anomalies (x' - x): a restoration may repaint a region, not pixels.

        `restored`: the `restorations(batch)` of the current generator, when already computed.
        """
        restored_u, restored_n, restored_p = restored if restored is not None else self.restorations(batch)
        adversarial = -self.critic(self.seen_by_critic(restored_u, batch.augment_fake)).mean()
        identity = functional.l1_loss(restored_n, batch.normal)
        restoration = self.restoration(restored_p, batch)
        loss = self.cfg.lambda_adv * adversarial + self.cfg.lambda_id * identity + self.cfg.lambda_rec * restoration
        stats = {
            "G/adversarial": adversarial.detach(),
            "G/identity": identity.detach(),
            "G/restoration": restoration.detach(),
        }
        if self.cfg.lambda_tv > 0:
            smoothness = total_variation(torch.cat([restored_u - batch.unlabeled, restored_p - batch.pseudo]))
            loss = loss + self.cfg.lambda_tv * smoothness
            stats["G/smoothness"] = smoothness.detach()
        stats["G/loss"] = loss.detach()
        return loss, stats
