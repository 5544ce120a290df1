"""Batches of (normal, unlabelled) index pairs, epoch by epoch, reproducible from a torch.Generator."""

import torch
from torch import Tensor

from ..errors import ConfigError


class PairSampler:
    """An epoch is len(normal) pairs (the official dataset length), cut into full batches.

    Each epoch draws a new pairing of unlabelled to normal images; with `fixed_pairing` the unlabelled
    image i stays paired with normal i for the whole run, as in the official loader.
    """

    def __init__(self, n_normal: int, n_unlabeled: int, batch_size: int, fixed_pairing: bool, rng: torch.Generator):
        if batch_size > n_normal:
            raise ConfigError(
                f"train.batch_size {batch_size} exceeds the {n_normal} labelled normal training images; lower it"
            )
        if batch_size < 2:
            raise ConfigError("train.batch_size must be at least 2: pseudo-anomalies take patches from other images")
        self.n_normal, self.n_unlabeled, self.batch_size = n_normal, n_unlabeled, batch_size
        self.fixed_pairing, self.rng = fixed_pairing, rng
        self.normal_order = torch.zeros(0, dtype=torch.long)
        self.unlabeled_order = torch.zeros(0, dtype=torch.long)
        self.position = 0

    def _new_epoch(self) -> None:
        self.normal_order = torch.randperm(self.n_normal, generator=self.rng)
        if self.n_unlabeled == 0:
            self.unlabeled_order = torch.zeros(0, dtype=torch.long)
        elif self.fixed_pairing:
            self.unlabeled_order = self.normal_order % self.n_unlabeled
        else:
            rounds = -(-self.n_normal // self.n_unlabeled)
            perms = [torch.randperm(self.n_unlabeled, generator=self.rng) for _ in range(rounds)]
            self.unlabeled_order = torch.cat(perms)[: self.n_normal]
        self.position = 0

    def next(self) -> tuple[Tensor, Tensor]:
        if self.position + self.batch_size > len(self.normal_order):
            self._new_epoch()
        window = slice(self.position, self.position + self.batch_size)
        self.position += self.batch_size
        unlabeled = self.unlabeled_order[window] if self.n_unlabeled else self.unlabeled_order
        return self.normal_order[window], unlabeled

    def state_dict(self) -> dict:
        return {"normal_order": self.normal_order, "unlabeled_order": self.unlabeled_order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.normal_order, self.unlabeled_order = state["normal_order"], state["unlabeled_order"]
        self.position = int(state["position"])
