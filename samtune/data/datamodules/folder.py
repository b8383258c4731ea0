"""Datamodule for image/mask folders, with a seeded random val split when no val folders exist."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samtune.data.datamodules.base import SamDataModule, seeded_split
from samtune.data.datasets.folder import DEFAULT_CONNECTIVITY, FolderDataset, check_void_value
from samtune.data.pairing import PairRow, check_pair_by, read_manifest
from samtune.validation import check_number


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
        pair_by: ``"name"`` (by stem and mask suffix) or ``"pattern"`` (``image_pattern`` and
            ``mask_pattern``, e.g. ``{id}_training`` / ``{id}_manual1``).
        image_pattern: the image name pattern for ``pair_by="pattern"``.
        mask_pattern: the mask name pattern for ``pair_by="pattern"``.
        pairs: a manifest (csv or json of ``image, mask[, split]`` rows, paths relative to
            it) instead of folders; rows marked ``val`` are the val split, else
            ``val_fraction`` of the rows is split off.
        void_value: the mask value of "not labelled" pixels (the samples' ignore mask):
            ``"auto"`` (255 in palette PNGs, PASCAL VOC's border), a value, or None.
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
        pair_by: str = "name",
        image_pattern: str | None = None,
        mask_pattern: str | None = None,
        pairs: str | Path | None = None,
        void_value: int | str | None = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.void_value = check_void_value(void_value)
        self.pairing_options = {
            "pair_by": check_pair_by(pair_by),
            "image_pattern": image_pattern,
            "mask_pattern": mask_pattern,
        }
        self.pairs = None if pairs is None else Path(pairs)
        self._rows: dict[str, list[PairRow]] | None = None
        if (val_images is None) != (val_masks is None):
            raise ValueError(
                "give both val_images and val_masks, or neither (to split the train folders)"
            )
        self.train_images, self.train_masks = train_images, train_masks
        self.val_images, self.val_masks = val_images, val_masks
        self.val_fraction = check_number("data.val_fraction", val_fraction, ge=0, lt=1)
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
        if self.pairs is not None:
            return self._from_manifest(split)
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
        val = self._train_folder.subset(val_idx)
        val.empty_note = (
            f"it is split off the train folders (data.val_fraction={self.val_fraction:g}), "
            f"which hold {len(self._train_folder)} usable image(s)"
        )
        return val

    def _from_manifest(self, split: str) -> FolderDataset:
        """The split's rows of the manifest (its ``val`` rows, or a seeded share of it)."""
        if self._rows is None:
            rows, problems, _ = read_manifest(self.pairs)
            by_split: dict[str, list[PairRow]] = {"train": [], "val": [], "test": []}
            for row in rows:
                by_split[row.split or "train"].append(row)
            self._rows = by_split
            self._manifest_problems = problems
            if not by_split["val"] and by_split["train"]:
                train_idx, val_idx = seeded_split(
                    len(by_split["train"]), self.val_fraction, self.seed
                )
                train = by_split["train"]
                by_split["train"] = [train[i] for i in train_idx]
                by_split["val"] = [train[i] for i in val_idx]
        rows = self._rows[split]
        if not rows:
            raise ValueError(f"{self.pairs}: the pair manifest holds no {split!r} rows")
        dataset = self._folder(None, None, rows=rows)
        if split == "train":
            for file, message in self._manifest_problems:
                dataset.reject(file, message)
        return dataset

    def _folder(
        self, images: str | Path | None, masks: str | Path | None, rows: list[PairRow] | None = None
    ) -> FolderDataset:
        return FolderDataset(
            images=images,
            masks=masks,
            rows=rows,
            manifest=self.pairs if rows is not None else None,
            **self.pairing_options,
            mask_type=self.mask_type,
            mask_suffix=self.mask_suffix,
            connectivity=self.connectivity,
            on_error=self.on_error,
            void_value=self.void_value,
        )


def _plain(value: str | Sequence[str]) -> str | list[str]:
    """A suffix or a plain list of them (Hydra passes a ListConfig)."""
    return value if isinstance(value, str) else [str(v) for v in value]
