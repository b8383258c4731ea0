"""Datamodule for image/mask folders, with a seeded random val split when no val folders exist."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samtune.data.datamodules.base import SamDataModule, seeded_split
from samtune.data.datasets.folder import DEFAULT_CONNECTIVITY, FolderDataset


class FolderDataModule(SamDataModule):
    """Image and mask folders (see :class:`FolderDataset`); val from its own folders or split off.

    Without ``val_images``/``val_masks`` the train folders are split at random (by ``seed``):
    ``round(n * val_fraction)`` images, at least one when there are two or more, go to val.
    Images skipped or dropped while indexing the shared folders are reported under train.

    Args:
        train_images: folder of training images.
        train_masks: folder of training masks.
        val_images: folder of validation images, or None to split the train folders.
        val_masks: folder of validation masks (given together with ``val_images``).
        val_fraction: share of the train folders used for val when splitting, in [0, 1).
        mask_type: ``"auto"``, ``"instance"`` or ``"binary"``.
        mask_suffix: suffix (or list of suffixes) of mask names after the image stem, e.g.
            ``"_segmentation"``; None tries the built-in list (see :class:`FolderDataset`).
        connectivity: 8 (default) or 4, for splitting binary masks into objects.
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
    """

    def __init__(
        self,
        *,
        train_images: str | Path | None = None,
        train_masks: str | Path | None = None,
        val_images: str | Path | None = None,
        val_masks: str | Path | None = None,
        val_fraction: float = 0.2,
        mask_type: str = "auto",
        mask_suffix: str | Sequence[str] | None = None,
        connectivity: int = DEFAULT_CONNECTIVITY,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (val_images is None) != (val_masks is None):
            raise ValueError(
                "give both val_images and val_masks, or neither (to split the train folders)"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        self.train_images, self.train_masks = train_images, train_masks
        self.val_images, self.val_masks = val_images, val_masks
        self.val_fraction = float(val_fraction)
        self.mask_type = mask_type
        self.mask_suffix = None if mask_suffix is None else _plain(mask_suffix)
        self.connectivity = int(connectivity)
        self._train_folder: FolderDataset | None = None

    def make_dataset(self, split: str) -> FolderDataset:
        """The train or val split."""
        if split not in ("train", "val"):
            raise ValueError(
                f"{type(self).__name__} has the splits 'train' and 'val', not {split!r}"
            )
        if self.val_images is not None and split == "val":
            return self._folder(self.val_images, self.val_masks)
        if self.train_images is None or self.train_masks is None:
            why = "" if split == "train" else " (no data.val_images given to take it from)"
            raise ValueError(
                f"{type(self).__name__}: the {split!r} split needs data.train_images and "
                f"data.train_masks{why}"
            )
        if self.val_images is not None:
            return self._folder(self.train_images, self.train_masks)
        if self._train_folder is None:
            self._train_folder = self._folder(self.train_images, self.train_masks)
        train_idx, val_idx = seeded_split(len(self._train_folder), self.val_fraction, self.seed)
        if split == "train":
            return self._train_folder.subset(train_idx, keep_rejects=True)
        return self._train_folder.subset(val_idx)

    def _folder(self, images: str | Path, masks: str | Path) -> FolderDataset:
        return FolderDataset(
            images=images,
            masks=masks,
            mask_type=self.mask_type,
            mask_suffix=self.mask_suffix,
            connectivity=self.connectivity,
            on_error=self.on_error,
        )


def _plain(value: str | Sequence[str]) -> str | list[str]:
    """A suffix or a plain list of them (Hydra passes a ListConfig)."""
    return value if isinstance(value, str) else [str(v) for v in value]
