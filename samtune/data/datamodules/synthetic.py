"""Datamodule of synthetic ellipse images, for smoke runs without any data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from samtune.data.datamodules.base import SamDataModule
from samtune.data.datasets.synthetic import SyntheticDataset
from samtune.validation import check_number


class SyntheticDataModule(SamDataModule):
    """Train and val splits of :class:`SyntheticDataset`, different images, both set by ``seed``.

    Args:
        num_train: images in the train split.
        num_val: images in the val split.
        size: ``(height, width)`` of every image.
        objects: inclusive range of ellipses per image.
        radius: range of an ellipse's semi-axes as fractions of the image's height and width.
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
    """

    def __init__(
        self,
        *,
        num_train: int = 8,
        num_val: int = 4,
        size: Sequence[int] = (96, 128),
        objects: Sequence[int] = (1, 4),
        radius: Sequence[float] = (0.06, 0.16),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.num_images = {
            "train": check_number("data.num_train", num_train, ge=1, integer=True),
            "val": check_number("data.num_val", num_val, ge=1, integer=True),
        }
        self.size = tuple(int(v) for v in size)
        self.objects = tuple(int(v) for v in objects)
        self.radius = tuple(float(v) for v in radius)

    def make_dataset(self, split: str) -> SyntheticDataset:
        """The train or val split (val images use a different seed stream)."""
        if split not in self.num_images:
            raise ValueError(
                f"{type(self).__name__} has the splits 'train' and 'val', not {split!r}"
            )
        seed = self.seed * 2 + (0 if split == "train" else 1)
        return SyntheticDataset(
            num_images=self.num_images[split],
            size=self.size,
            objects=self.objects,
            radius=self.radius,
            seed=seed,
        )
