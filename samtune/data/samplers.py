"""Samplers whose order depends only on ``(seed, epoch)`` and that split it across ranks.

With one process a :class:`ShardedSampler` gives out the whole epoch; with ``R`` ranks (DDP)
rank ``r`` takes every ``R``-th index of the same order, starting at ``r``. So batch ``k`` of
the ``R`` ranks together holds exactly the items of batch ``k`` of one process whose batch is
``R`` times larger: a run on several GPUs sees the same data, step by step, as one on one GPU.

Both samplers are :class:`torch.utils.data.DistributedSampler` subclasses, so Lightning keeps
them as they are instead of wrapping them in its own (which would re-shuffle the order and pad
the evaluation splits with repeated items); it calls :meth:`set_epoch` before every epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class ShardedSampler(DistributedSampler):
    """The epoch's order (shuffled by ``(seed, epoch)`` or in sequence), this rank's share of it.

    The shuffled order is the one of :class:`~torch.utils.data.DistributedSampler` with the same
    seed, so results do not depend on which of the two is in use.

    Args:
        length: number of items in the dataset.
        shuffle: shuffle every epoch (training) or keep the dataset's order (evaluation).
        seed: seed of the shuffling; epoch ``e`` uses ``seed + e``.
        num_replicas: number of ranks the epoch is split across.
        rank: this process's rank, in ``[0, num_replicas)``.
        pad: repeat items from the start so every rank gets the same number (needed in
            training, where every rank must take the same number of steps). Without padding
            (evaluation) each item is seen exactly once and the first ranks may get one more.
        keyed: yield ``(epoch, index)`` pairs instead of indices, so a dataset can key what it
            draws for an item (its augmentation) by the epoch as well; the order is the same.
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        pad: bool = True,
        keyed: bool = False,
    ) -> None:
        if int(length) != length or length < 0:
            raise ValueError(f"ShardedSampler: length must be an integer >= 0, got {length!r}")
        if int(num_replicas) != num_replicas or num_replicas < 1:
            raise ValueError(
                f"ShardedSampler: num_replicas must be an integer >= 1, got {num_replicas!r}"
            )
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(
                f"ShardedSampler: rank must be in [0, {int(num_replicas)}), got {rank!r}"
            )
        # DistributedSampler.__init__ would ask torch.distributed for the world size; these are
        # the attributes it (and Lightning, which reads ``shuffle``) relies on.
        self.length = int(length)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.pad = bool(pad)
        self.keyed = bool(keyed)
        self.drop_last = False
        self.epoch = 0
        self._skip: dict[int, int] = {}
        if self.pad:
            self.num_samples = -(-self.length // self.num_replicas)
        else:
            self.num_samples = len(range(self.rank, self.length, self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas if self.pad else self.length

    def set_epoch(self, epoch: int) -> None:
        """Use the order of epoch ``epoch`` from the next iteration on."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """The next pass over ``epoch`` leaves out the first ``skip`` items of this rank's share
        (once): a run resumed in the middle of an epoch continues where it stopped."""
        self.epoch = int(epoch)
        self._skip = {int(epoch): max(0, int(skip))}

    def order(self) -> list[int]:
        """The whole epoch's order, before it is split across ranks."""
        if not self.shuffle:
            return list(range(self.length))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.length, generator=generator).tolist()

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        order = self.order()
        if self.pad and order and len(order) < self.total_size:
            repeats = -(-self.total_size // len(order))
            order = (order * repeats)[: self.total_size]
        skip = self._skip.pop(self.epoch, 0)
        mine = order[self.rank :: self.num_replicas][skip:]
        if self.keyed:
            return iter([(self.epoch, i) for i in mine])
        return iter(mine)

    def __len__(self) -> int:
        return self.num_samples


def replicas_of(datamodule: object) -> tuple[int, int]:
    """``(world size, global rank)`` of the Lightning trainer a datamodule is attached to;
    ``(1, 0)`` when it is used without one."""
    trainer = getattr(datamodule, "trainer", None)
    if trainer is None:
        return 1, 0
    return int(trainer.world_size), int(trainer.global_rank)


def rank_seed(seed: int, rank: int) -> int:
    """Seed of a rank's own random streams (augmentation, DataLoader workers).

    ``seed`` itself on rank 0, so a single process is unchanged; another, well-mixed seed on
    every other rank, so that ranks do not apply the same augmentations to their images.
    """
    if int(rank) == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])
