"""``Sample``: what every dataset returns, at the image's own resolution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


class DataError(ValueError):
    """A data file is unreadable or inconsistent; the message names the file and the problem."""


@dataclass
class Sample:
    """One image and its objects.

    Attributes:
        image: ``H x W x 3`` uint8 RGB.
        masks: ``N x H x W`` bool, one per object (N may be 0 only before filtering).
        class_ids: ``N`` ints, the class of each object (1 when there is a single class).
        meta: at least ``file`` (path of the image) and ``image_id``; datasets may add more
            (``class_names`` mapping id to name, ``volume``/``slice`` for volumes, ...).
        ignore: ``H x W`` bool, True where the dataset marks a pixel "not labelled" (COCO
            ``iscrowd`` regions, VOC's 255 border, LabelMe ``__ignore__`` shapes, outside a
            field of view), or None when every pixel is labelled. Ignored pixels are neither
            supervised nor scored, and no prompt is drawn from them. A pixel of an object is
            never ignored: the ignore mask is cut back to the pixels no object covers.
    """

    image: np.ndarray
    masks: np.ndarray
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    meta: dict[str, Any] = field(default_factory=dict)
    ignore: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.class_ids.size == 0 and self.masks.shape[0] > 0:
            self.class_ids = np.ones(self.masks.shape[0], dtype=np.int64)
        where = self.meta.get("file", "<unknown file>")
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise DataError(
                f"{where}: image must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}"
            )
        if self.masks.ndim != 3 or self.masks.shape[1:] != self.image.shape[:2]:
            raise DataError(
                f"{where}: masks have size {tuple(self.masks.shape[1:])} but the image is "
                f"{tuple(self.image.shape[:2])}"
            )
        if self.masks.dtype != bool:
            self.masks = self.masks.astype(bool)
        if len(self.class_ids) != self.masks.shape[0]:
            raise DataError(
                f"{where}: {self.masks.shape[0]} masks but {len(self.class_ids)} class ids"
            )
        if self.ignore is not None:
            self.ignore = as_ignore(self.ignore, self.image.shape[:2], self.masks, where)


def as_ignore(
    ignore: np.ndarray, size: tuple[int, int], masks: np.ndarray, where: str
) -> np.ndarray | None:
    """``ignore`` as an ``H x W`` bool mask without the pixels of ``masks`` (None when nothing
    is left ignored).

    Raises:
        DataError: ``ignore`` is not the image's size (naming ``where``).
    """
    ignore = np.asarray(ignore)
    if ignore.shape != tuple(size):
        raise DataError(
            f"{where}: the ignore mask has size {tuple(ignore.shape)} but the image is "
            f"{tuple(size)}"
        )
    ignore = ignore.astype(bool, copy=True)
    if masks.shape[0]:
        ignore &= ~masks.any(axis=0)
    return ignore if ignore.any() else None


def ignored_pixels(sample: Sample) -> int:
    """How many pixels of ``sample`` are ignored (0 without an ignore mask)."""
    return 0 if sample.ignore is None else int(np.count_nonzero(sample.ignore))
