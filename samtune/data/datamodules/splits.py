"""``SplitDataModule``: layouts that bring a val (and test) split of their own, or not.

A Kaggle download often holds only training images; a Roboflow or Ultralytics export holds
``train``/``valid``/``test``. A subclass says which splits its layout has and builds each; a
missing val split is then cut from train at random (whole images, seeded), the same rule as
the folder and volume datamodules.
"""

from __future__ import annotations

from typing import Any

from samtune.data.datamodules.base import SamDataModule, seeded_split
from samtune.data.datasets.objects import ObjectFilesDataset


class SplitDataModule(SamDataModule):
    """Train/val/test from the layout's own splits; val split off train when it has none.

    Subclasses implement :meth:`has_split` and :meth:`layout_dataset`. Without a val split of
    its own, ``round(n * val_fraction)`` train images (at least one when there are two or more)
    go to val, chosen by ``seed``; images skipped or dropped while indexing are reported under
    train.

    Args:
        val_fraction: share of the train images used for val when the layout has no val split.
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
    """

    def __init__(self, *, val_fraction: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        self.val_fraction = float(val_fraction)
        self._whole_train: ObjectFilesDataset | None = None

    def has_split(self, split: str) -> bool:
        """Whether the layout holds ``split`` itself (train must exist)."""
        raise NotImplementedError

    def layout_dataset(self, split: str) -> ObjectFilesDataset:
        """The dataset of a split the layout holds."""
        raise NotImplementedError

    def make_dataset(self, split: str) -> ObjectFilesDataset:
        """``split`` from the layout, or (val without its own) a seeded part of train."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if split == "test" and not self.has_split("test"):
            raise ValueError(f"{type(self).__name__}: the data holds no 'test' split")
        if split == "test" or self.has_split("val"):
            return self.layout_dataset(split)
        if self._whole_train is None:
            self._whole_train = self.layout_dataset("train")
        train_idx, val_idx = seeded_split(len(self._whole_train), self.val_fraction, self.seed)
        if split == "train":
            return self._whole_train.subset(train_idx, keep_rejects=True)
        return self._whole_train.subset(val_idx)
