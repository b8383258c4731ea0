"""``data.ignore_masks``: a folder of masks marking the pixels of each image that are not labelled.

A field-of-view mask (retina photographs, endoscopy, ultrasound sectors), or any region a
dataset leaves unannotated, given as one mask file per image in one folder, paired with the
image by file stem: ``21_training.tif`` with ``21_training.png`` (or, as retina sets name them,
``21_training_mask.gif``: a mask stem may carry one of the folder pairing's mask suffixes).
A non-zero pixel is ignored: neither supervised nor scored, and no prompt is drawn there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samtune.data.datasets.folder import MASK_SUFFIXES
from samtune.data.io import LABEL_SUFFIXES, read_label_map
from samtune.data.sample import DataError


class IgnoreMasks:
    """The mask files of an ignore-mask folder, by stem.

    Args:
        folder: the folder (``data.ignore_masks``).

    Raises:
        DataError: the folder is missing, holds no mask file, or two of its files share a stem.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(f"{self.folder}: data.ignore_masks folder not found")
        self.by_stem: dict[str, Path] = {}
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or path.suffix.lower() not in LABEL_SUFFIXES:
                continue
            if not path.is_file():
                continue
            if path.stem in self.by_stem:
                raise DataError(
                    f"{path}: two ignore masks share the stem {path.stem!r} "
                    f"({self.by_stem[path.stem].name})"
                )
            self.by_stem[path.stem] = path
        if not self.by_stem:
            raise DataError(
                f"{self.folder}: data.ignore_masks holds no mask file ({', '.join(LABEL_SUFFIXES)})"
            )

    def names_tried(self, image: str | Path) -> list[str]:
        """The mask stems that pair with ``image``, in the order they are tried."""
        stem = Path(image).stem
        return [stem] + [stem + suffix for suffix in MASK_SUFFIXES]

    def find(self, image: str | Path) -> Path | None:
        """The ignore mask of ``image``, or None when the folder holds none for it."""
        for name in self.names_tried(image):
            if name in self.by_stem:
                return self.by_stem[name]
        return None

    def check_paired(self, images: Sequence[str], *, split: str | None = None) -> int:
        """How many of ``images`` have no ignore mask.

        Raises:
            DataError: none of them has one (a pairing that finds nothing is a mistake, named
                with the names tried for the first image).
        """
        missing = sum(self.find(image) is None for image in images)
        if images and missing == len(images):
            tried = ", ".join(self.names_tried(images[0])[:4])
            where = f"the {split} split" if split else "the dataset"
            raise DataError(
                f"{self.folder}: data.ignore_masks has a mask for none of the {len(images)} "
                f"image(s) of {where}; for {images[0]} it looked for {tried}, ... "
                f"(with {', '.join(LABEL_SUFFIXES)})"
            )
        return missing

    def read(self, image: str | Path, size: tuple[int, int]) -> np.ndarray | None:
        """The ignored pixels of ``image`` (``H x W`` bool, non-zero mask pixels), or None when
        the folder has no mask for it.

        Raises:
            DataError: the mask cannot be read, or its size is not the image's (naming both).
        """
        path = self.find(image)
        if path is None:
            return None
        codes = read_label_map(path)
        if codes.shape != tuple(size):
            raise DataError(
                f"{path}: ignore mask is {codes.shape[0]}x{codes.shape[1]} (HxW) but its image "
                f"{image} is {size[0]}x{size[1]}"
            )
        return codes != 0
