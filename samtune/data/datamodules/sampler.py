"""The order of the training samples: a function of (seed, epoch) only, so a resumed run sees
exactly the samples the uninterrupted run would have seen, from the same position."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation per epoch, drawn from ``seed`` and the epoch number.

    Lightning calls :meth:`set_epoch` before every epoch. :meth:`resume_at` makes the next pass
    over ``epoch`` start after its first ``skip`` samples (a run resumed mid-epoch).

    Args:
        size: number of samples.
        seed: seed of every epoch's permutation.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = int(size)
        self.seed = int(seed)
        self.epoch = 0
        self._skip: dict[int, int] = {}

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next pass over ``epoch`` leaves out the first ``skip`` samples (once)."""
        self.epoch = int(epoch)
        self._skip = {int(epoch): max(0, int(skip))}

    def order(self, epoch: int) -> list[int]:
        """The full permutation of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(epoch))
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        skip = self._skip.pop(self.epoch, 0)
        return iter(self.order(self.epoch)[skip:])

    def __len__(self) -> int:
        return self.size
