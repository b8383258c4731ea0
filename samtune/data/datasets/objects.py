"""``ObjectFilesDataset``: images whose objects come from per-image annotation sources.

The formats that list, per image, where its objects are (one mask file per object, a YOLO label
file of polygons, a LabelMe json) share everything but the reading of those sources: indexing
with the ``on_error`` policy and counts, the seeded split into subsets, and building a
``Sample``. A subclass lists its :class:`Item` objects and implements :meth:`read_objects`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.datasets.base import SampleDataset
from samtune.data.io import read_image, read_size
from samtune.data.sample import DataError, Sample


@dataclass
class Item:
    """One image and where its objects are.

    Attributes:
        image: the image file.
        image_id: its id in ``meta`` (usually the file stem).
        source: what :meth:`ObjectFilesDataset.read_objects` reads (format-specific).
        objects: objects kept (set while indexing).
        dropped_small: objects below ``min_area`` (set while indexing).
        meta: extra ``meta`` entries of the item's samples.
        counts: format-specific counts (e.g. shapes ignored) that :meth:`read_objects` sets;
            added to the dataset's ``stats`` while indexing.
    """

    image: Path
    image_id: str
    source: Any
    objects: int = 0
    dropped_small: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class ObjectFilesDataset(SampleDataset):
    """Base of the datasets whose items are :class:`Item` (an image and its object sources).

    Subclasses call :meth:`index` with their items from ``__init__`` and implement
    :meth:`read_objects`. Indexing reads every image header and every item's objects once, so
    bad files are found (and counted, or skipped by ``on_error``) before training; objects with
    no pixel are dropped (``dropped_empty``), objects below ``min_area`` pixels too
    (``dropped_small``), and images left without objects (``dropped_images``).

    Args:
        class_names: ``{class id: name}`` carried in every sample's ``meta["class_names"]``.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
    """

    item_counts: tuple[str, ...] = ()  # format counts a subset recounts over its own items

    def __init__(
        self, *, class_names: dict[int, str], on_error: str = "raise", min_area: int = 1
    ) -> None:
        super().__init__(on_error=on_error, min_area=min_area)
        self.class_names = dict(class_names)
        self._items: list[Item] = []

    def read_objects(self, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """All objects of ``item`` as ``(masks N x H x W bool, class_ids N int64)``.

        Args:
            item: the item.
            size: ``(height, width)`` of its image.

        Raises:
            DataError: naming the bad file.
        """
        raise NotImplementedError

    def image_size(self, item: Item) -> tuple[int, int]:
        """``(height, width)`` of the item's image, from its header.

        Raises:
            DataError: the image is missing or unreadable (naming it).
        """
        if not item.image.is_file():
            raise DataError(f"{item.image}: image file not found")
        return read_size(item.image)

    def read_item_image(self, item: Item) -> np.ndarray:
        """The item's image as ``H x W x 3`` uint8 (formats with embedded images override it)."""
        return read_image(item.image)

    def index(self, items: list[Item]) -> None:
        """Check every item, count its objects and keep the usable ones."""
        for item in items:
            try:
                masks, _ = self.read_objects(item, self.image_size(item))
            except DataError as err:
                self.reject(str(item.image), str(err))
                continue
            for key, value in item.counts.items():
                self.counts[key] = self.counts.get(key, 0) + value
            areas = masks.sum(axis=(1, 2))
            item.objects = int((areas >= max(self.min_area, 1)).sum())
            item.dropped_small = int(((areas > 0) & (areas < self.min_area)).sum())
            self.counts["dropped_empty"] += int((areas == 0).sum())
            self.counts["dropped_small"] += item.dropped_small
            if item.objects == 0:
                self.counts["dropped_images"] += 1
                continue
            self._items.append(item)
        self._recount()

    def _recount(self) -> None:
        self.counts["images"] = len(self._items)
        self.counts["objects"] = sum(item.objects for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def file_of(self, index: int) -> str:
        """Path of the image at ``index``."""
        return str(self._items[index].image)

    def load(self, index: int) -> Sample:
        """Read image ``index`` and its objects (those of at least ``min_area`` pixels)."""
        item = self._items[index]
        image = self.read_item_image(item)
        masks, class_ids = self.read_objects(item, image.shape[:2])
        return self.make_sample(item, image, masks, class_ids)

    def make_sample(
        self,
        item: Item,
        image: np.ndarray,
        masks: np.ndarray,
        class_ids: np.ndarray,
        ignore: np.ndarray | None = None,
    ) -> Sample:
        """The ``Sample`` of ``item``: its objects of at least ``min_area`` pixels, and its
        ignore mask (``H x W`` bool "not labelled" pixels, or None)."""
        keep = masks.sum(axis=(1, 2)) >= max(self.min_area, 1)
        meta = {
            "file": str(item.image),
            "image_id": item.image_id,
            "orig_size": tuple(image.shape[:2]),
            "class_names": dict(self.class_names),
            **item.meta,
        }
        return Sample(
            image=image, masks=masks[keep], class_ids=class_ids[keep], meta=meta, ignore=ignore
        )

    def subset(self, indices: list[int], *, keep_rejects: bool = False) -> ObjectFilesDataset:
        """A dataset of the items ``indices`` only (same settings, counts recomputed).

        The ``skipped`` list, the ``dropped_images``/``dropped_empty`` counts and the
        format-specific counts of indexing are carried over only with ``keep_rejects=True``
        (give it to exactly one subset of a split so they count once); those named in
        ``item_counts`` are recounted over the subset's own items instead.
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._items = [self._items[i] for i in indices]
        clone.skipped = list(self.skipped) if keep_rejects else []
        clone.counts = {
            key: (value if keep_rejects and key not in _PER_ITEM else 0)
            for key, value in self.counts.items()
        }
        clone.counts["dropped_small"] = sum(item.dropped_small for item in clone._items)
        for key in self.item_counts:  # counts that belong to the images kept
            clone.counts[key] = sum(item.counts.get(key, 0) for item in clone._items)
        clone._recount()
        return clone


_PER_ITEM = ("images", "objects", "dropped_small")


def polygon_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Rasterise a polygon of ``(x, y)`` pixel coordinates, as COCO polygons are.

    Args:
        points: ``K x 2`` vertices, ``K >= 3``, in pixels (x to the right, y down).
        size: ``(height, width)``.

    Returns:
        ``H x W`` bool.
    """
    from pycocotools import mask as mask_utils

    height, width = size
    flat = np.asarray(points, dtype=np.float64).reshape(-1).tolist()
    rle = mask_utils.frPyObjects([flat], height, width)
    return mask_utils.decode(rle)[:, :, 0].astype(bool)


def no_objects(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(masks, class_ids)`` of an image without objects."""
    return np.zeros((0, *size), dtype=bool), np.zeros(0, dtype=np.int64)
