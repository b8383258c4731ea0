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
    """

    image: np.ndarray
    masks: np.ndarray
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    meta: dict[str, Any] = field(default_factory=dict)

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
