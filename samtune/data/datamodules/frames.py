"""Datamodule for plain frame folders with per-frame label images (see
:mod:`samtune.data.datasets.videos.frames`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samtune.data.datamodules.clips import ClipDataModule
from samtune.data.datasets.videos import FramesDataset


class FramesDataModule(ClipDataModule):
    """Videos as frame and label folders; val from its own folders or split off by video.

    Args:
        images: the training frames folder.
        labels: its label images.
        val_images: a validation frames folder, or None to split videos off.
        val_labels: its label images (given with ``val_images``).
        mask_suffix: what follows the frame stem in label names (None: the built-in list).
        **kwargs: the :class:`ClipDataModule` arguments.
    """

    def __init__(
        self,
        *,
        images: str | Path,
        labels: str | Path,
        val_images: str | Path | None = None,
        val_labels: str | Path | None = None,
        mask_suffix: str | Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (val_images is None) != (val_labels is None):
            raise ValueError("give both data.val_images and data.val_labels, or neither")
        self.folders = {"train": (images, labels), "val": (val_images, val_labels)}
        self.mask_suffix = (
            mask_suffix
            if mask_suffix is None or isinstance(mask_suffix, str)
            else list(mask_suffix)
        )

    def own_splits(self) -> tuple[str, ...]:
        """train, and val when its folders are given."""
        return ("train", "val") if self.folders["val"][0] is not None else ("train",)

    def make_clips(self, split: str) -> FramesDataset:
        """The whole videos of ``split``."""
        images, labels = self.folders[split]
        return FramesDataset(
            images=images,
            labels=labels,
            mask_suffix=self.mask_suffix,
            seed=self.seed,
            on_error=self.on_error,
        )
