"""Batches of (normal, unlabelled, pseudo-anomaly source) indices, epoch by epoch, from a torch.Generator."""

import torch
from torch import Tensor

from ..errors import ConfigError


class PairSampler:
    """An epoch is len(normal) pairs (the official dataset length), cut into full batches.

    Each epoch draws a new pairing of unlabelled to normal images. With `fixed_pairing` normal i is paired
    with unlabelled i, as in the official loader (data_loader.py at zzr728/SAGAN 2fa5bd7); when there are
    more unlabelled images than normals (the held-out validation normals make it so), the pairing shifts by
    len(normal) each epoch, so every unlabelled image is used and the mixture keeps its anomaly ratio.

    Each normal also gets a pseudo-anomaly source: another labelled normal drawn from the whole training
    set, never itself, as the official loader draws FPI's foreign patch.
    """

    def __init__(self, n_normal: int, n_unlabeled: int, batch_size: int, fixed_pairing: bool, rng: torch.Generator):
        if batch_size > n_normal:
            raise ConfigError(
                f"train.batch_size {batch_size} exceeds the {n_normal} labelled normal training images; lower it"
            )
        self.n_normal, self.n_unlabeled, self.batch_size = n_normal, n_unlabeled, batch_size
        self.fixed_pairing, self.rng = fixed_pairing, rng
        self.normal_order = torch.zeros(0, dtype=torch.long)
        self.unlabeled_order = torch.zeros(0, dtype=torch.long)
        self.position = 0
        self.epoch = 0

    def _new_epoch(self) -> None:
        self.normal_order = torch.randperm(self.n_normal, generator=self.rng)
        if self.n_unlabeled == 0:
            self.unlabeled_order = torch.zeros(0, dtype=torch.long)
        elif self.fixed_pairing:
            self.unlabeled_order = (self.normal_order + self.epoch * self.n_normal) % self.n_unlabeled
        else:
            rounds = -(-self.n_normal // self.n_unlabeled)
            perms = [torch.randperm(self.n_unlabeled, generator=self.rng) for _ in range(rounds)]
            self.unlabeled_order = torch.cat(perms)[: self.n_normal]
        self.position = 0
        self.epoch += 1

    def next(self) -> tuple[Tensor, Tensor, Tensor]:
        """(normal, unlabelled, source) indices of the next batch; unlabelled is empty without unlabelled data."""
        if self.position + self.batch_size > len(self.normal_order):
            self._new_epoch()
        window = slice(self.position, self.position + self.batch_size)
        self.position += self.batch_size
        normal = self.normal_order[window]
        unlabeled = self.unlabeled_order[window] if self.n_unlabeled else self.unlabeled_order
        source = torch.randint(0, self.n_normal - 1, normal.shape, generator=self.rng)
        return normal, unlabeled, source + (source >= normal).long()

    def state_dict(self) -> dict:
        """The place in the epoch and the epoch's orders; with the generator's state it resumes exactly."""
        return {
            "normal_order": self.normal_order,
            "unlabeled_order": self.unlabeled_order,
            "position": self.position,
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`; the generator's state is restored by the caller."""
        self.normal_order, self.unlabeled_order = state["normal_order"], state["unlabeled_order"]
        self.position, self.epoch = int(state["position"]), int(state.get("epoch", 0))
