"""Datamodule for VOS folders (DAVIS, MOSE, YouTube-VOS; see
:mod:`samtune.data.datasets.videos.vos` for the layouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samtune.data.datamodules.clips import ClipDataModule
from samtune.data.datasets.videos import VosDataset


class VosDataModule(ClipDataModule):
    """Train and val videos of one VOS folder.

    Args:
        root: the dataset folder.
        train_split: the training split (``train``: ``root/train/`` or DAVIS'
            ``ImageSets/2017/train.txt``), or None for every video under ``root/JPEGImages``.
        val_split: the validation split (DAVIS: ``val``), or None to split ``val_fraction`` of
            the training videos off by ``seed``. YouTube-VOS and MOSE ship no ground truth for
            ``valid`` beyond first frames: leave it None there.
        test_split: a test split, or None.
        resolution: DAVIS' resolution folder (None: found).
        void_value: the label value that is never an object (DAVIS 255), or None.
        **kwargs: the :class:`ClipDataModule` arguments.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        train_split: str | None = "train",
        val_split: str | None = None,
        test_split: str | None = None,
        resolution: str | None = None,
        void_value: int | None = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.resolution = resolution
        self.void_value = void_value

    def own_splits(self) -> tuple[str, ...]:
        """train, and val and test where named."""
        return tuple(s for s in ("train", "val", "test") if s == "train" or self.splits[s])

    def make_clips(self, split: str) -> VosDataset:
        """The whole videos of ``split``."""
        return VosDataset(
            root=self.root,
            split=self.splits[split],
            resolution=self.resolution,
            void_value=self.void_value,
            seed=self.seed,
            on_error=self.on_error,
        )
