"""One iteration of the paper's schedule: the networks, their optimisers, the sampler and the objective.

The loop in train.py decides when to validate, checkpoint and stop; benchmarks/speed.py times the same
`Trainer.iteration`, so its FLOPs and speed are the loop's.
"""

import copy

import torch

from .config import Config, TrainConfig, decay_window
from .data.dataset import to_model_range
from .data.sampler import PairSampler
from .devices import resolve_precision
from .distributed import SINGLE, World
from .losses import Batch, SAGANLoss
from .models import build_critic, build_generator
from .random_state import restore_rng, rng_states

# The average's half-life is at most this share of the images seen so far, so the random initial weights
# leave it early in the run (StyleGAN2-ADA's ema_rampup, Karras et al. 2020).
EMA_RAMPUP = 0.1


def lr_factor(cfg: TrainConfig):
    """Multiplier of the base learning rate after `step` iterations."""
    start, decay = decay_window(cfg)

    def factor(step: int) -> float:
        if cfg.lr_schedule == "linear" and step > start:
            return max(0.0, 1.0 - (step - start) / decay)
        if cfg.lr_schedule == "official" and step > start:
            # StarGAN lineage: lr -= lr0 / num_iters_decay every 1000 iterations, which ends at 0.999 * lr0.
            return max(0.0, 1.0 - ((step - start) // 1000) / decay)
        return 1.0

    return factor


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


class Trainer:
    """The networks, optimisers, sampler and objective of one run, and one iteration of the paper's schedule.

    `iteration(step)` is what the loop and benchmarks/speed.py both run: a critic step every iteration, a
    generator step every n_critic-th. Under torchrun every rank draws the same global batch and computes its
    slice of it (see distributed.py).
    """

    def __init__(
        self,
        cfg: Config,
        device: torch.device,
        normal_images: torch.Tensor,
        unlabeled_images: torch.Tensor,
        world: World = SINGLE,
    ):
        t = cfg.train
        self.cfg, self.device, self.world = cfg, device, world
        self.normal_images, self.unlabeled_images = normal_images.to(device), unlabeled_images.to(device)
        self.generator = build_generator(cfg.model).to(device)
        self.critic = build_critic(cfg.model).to(device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), t.lr_d, betas=(t.beta1, t.beta2))
        self.schedule = lr_factor(t)
        self.rngs = {
            "data": torch.Generator().manual_seed(t.seed),
            "loss": torch.Generator(device).manual_seed(t.seed + 1),
        }
        self.sampler = PairSampler(
            len(normal_images), len(unlabeled_images), t.batch_size, cfg.data.fixed_pairing, self.rngs["data"]
        )
        self.objective = SAGANLoss(self.generator, self.critic, cfg.loss, self.rngs["loss"])
        bfloat16 = resolve_precision(t.precision, device) == "bfloat16"
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False).eval() if t.ema_half_life else None
        if t.compile:
            self.objective.generator = torch.compile(self.generator)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest kernels are found once

    @property
    def scored_generator(self) -> torch.nn.Module:
        """The generator that validation, selection and scoring use: the moving average when there is one."""
        return self.ema if self.ema is not None else self.generator

    def next_batch(self, step: int) -> Batch:
        """Set the learning rates of `step` and draw its batch (this process's slice of it)."""
        t = self.cfg.train
        for optimizer, base in ((self.opt_g, t.lr_g), (self.opt_d, t.lr_d)):
            set_lr(optimizer, base * self.schedule(step - 1))
        normal_index, unlabeled_index, source_index = (i.to(self.device) for i in self.sampler.next())
        with self.autocast:
            return self.objective.make_batch(
                to_model_range(self.normal_images[normal_index]),
                to_model_range(self.unlabeled_images[unlabeled_index]),
                to_model_range(self.normal_images[source_index]),
            ).shard(self.world)

    def iteration(self, step: int) -> dict[str, torch.Tensor]:
        """One critic update, and a generator update when step is a multiple of n_critic; the loss tensors."""
        t = self.cfg.train
        batch = self.next_batch(step)
        generator_turn = step % t.n_critic == 0
        restored = None
        if generator_turn and t.reuse_restoration:
            with self.autocast:
                restored = self.objective.restorations(batch)
        fake = restored[0].detach() if restored is not None else None
        penalize = (step - 1) % self.cfg.loss.gp_every == 0
        stats = critic_step(self.objective, self.opt_d, batch, self.autocast, self.world, fake, penalize)
        if generator_turn:
            stats.update(generator_step(self.objective, self.opt_g, batch, self.autocast, self.world, restored))
            self._update_ema(step)
        return stats

    def _update_ema(self, step: int) -> None:
        """Move the average towards the generator; its half-life in images, ramped up early in the run."""
        # Not torch.optim.swa_utils.AveragedModel: it renames the weights (module.*) that runs and best.pt keep,
        # and its avg_fn sees only a count of updates, so this ramp would be a function of our own there too.
        if self.ema is None:
            return
        t = self.cfg.train
        seen = (step // t.n_critic) * t.batch_size
        half_life = min(t.ema_half_life, EMA_RAMPUP * seen)
        weight = 1.0 - 0.5 ** (t.batch_size / max(half_life, 1e-8))
        with torch.no_grad():
            for average, current in zip(self.ema.parameters(), self.generator.parameters(), strict=True):
                average.lerp_(current, weight)

    def state_dict(self) -> dict:
        """Networks, optimisers, the sampler's place and the random streams."""
        return {
            "generator": self.generator.state_dict(),
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_states(self.rngs),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where `state_dict()` was taken."""
        self.generator.load_state_dict(state["generator"])
        self.critic.load_state_dict(state["critic"])
        for module, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d"), (self.sampler, "sampler")):
            module.load_state_dict(state[key])
        restore_rng(state["rng"], self.rngs)
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])


def critic_step(
    objective: SAGANLoss,
    optimizer,
    batch,
    autocast,
    world: World = SINGLE,
    fake: torch.Tensor | None = None,
    penalize: bool = True,
) -> dict[str, torch.Tensor]:
    """One critic update on `batch` (gradients averaged over the ranks); the loss tensors."""
    with autocast:
        loss, stats = objective.critic_loss(batch, fake, penalize)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    world.average_gradients(objective.critic)
    optimizer.step()
    return stats


def generator_step(
    objective: SAGANLoss, optimizer, batch, autocast, world: World = SINGLE, restored=None
) -> dict[str, torch.Tensor]:
    """One generator update; the critic's weights are frozen so no gradient is spent on them."""
    objective.critic.requires_grad_(False)
    with autocast:
        loss, stats = objective.generator_loss(batch, restored)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    world.average_gradients(objective.generator)
    optimizer.step()
    objective.critic.requires_grad_(True)
    return stats
