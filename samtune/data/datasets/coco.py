"""COCO instance annotations (RLE or polygons) as a dataset of ``Sample``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.datasets.base import SampleDataset
from samtune.data.io import read_image
from samtune.data.rle import segmentation_area
from samtune.data.sample import DataError, Sample


@dataclass
class _CocoObject:
    rle: dict[str, Any]
    category_id: int
    annotation_id: Any


@dataclass
class _CocoImage:
    path: Path
    image_id: Any
    height: int
    width: int
    objects: list[_CocoObject]
    crowds: list[dict[str, Any]] = field(default_factory=list)
    dropped_empty: int = 0
    dropped_small: int = 0
    dropped_outside: int = 0
    crowd_ignored: int = 0


class CocoDataset(SampleDataset):
    """Images and instance masks from a COCO json file.

    Indexing (construction) checks, without reading any image: the json structure, that every
    listed image file exists, that every segmentation is valid (RLE runs that tile the image,
    polygons with >= 3 points) and that an RLE's size matches its image entry's height/width.
    Reading an image checks that its real size matches the json. Annotations with
    ``iscrowd=1`` are no objects: their pixels (RLE or polygons, checked like the others) become
    the sample's ignore mask, neither supervised nor scored (counted in
    ``stats["crowd_ignored"]``; an image holding only crowd regions is dropped), polygons that lie wholly
    outside their image are dropped (``dropped_outside``), other masks with no pixel are
    dropped (``dropped_empty``), masks below ``min_area`` pixels are dropped (``dropped_small``),
    and images left without objects are dropped (``dropped_images``). Images with no annotation
    at all are dropped the same way.

    Each item's ``class_ids`` are the annotations' ``category_id``; ``meta`` holds ``file``,
    ``image_id``, ``orig_size`` ``(H, W)``, ``annotation_ids`` and ``class_names`` ``{id: name}``.

    Args:
        root: folder the json's ``file_name`` entries are relative to.
        ann_file: the COCO json.
        on_error: ``"raise"`` or ``"skip"`` (see :class:`~samtune.data.datasets.base.SampleDataset`).
            Problems of the json as a whole (unreadable, wrong structure, an annotation pointing
            at an unknown image) always raise.
        min_area: smallest mask kept, in pixels at the original resolution.

    Raises:
        DataError: naming the json file and the image file or annotation id at fault.
    """

    def __init__(
        self, *, root: str | Path, ann_file: str | Path, on_error: str = "raise", min_area: int = 1
    ) -> None:
        super().__init__(on_error=on_error, min_area=min_area)
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.counts["crowd_ignored"] = 0
        self.counts["dropped_outside"] = 0
        if not self.root.is_dir():
            raise DataError(f"{self.ann_file}: image root {self.root} is not a folder")
        data = self._read_json()
        self.class_names = self._categories(data)
        images = self._image_entries(data)
        self._attach_annotations(data, images)
        self._images: list[_CocoImage] = []
        for entry in images.values():
            if entry is None:
                continue  # rejected while attaching annotations
            if not entry.path.is_file():
                self.reject(str(entry.path), f"{self.ann_file}: image file {entry.path} not found")
                continue
            for key in ("dropped_empty", "dropped_outside", "dropped_small", "crowd_ignored"):
                self.counts[key] += getattr(entry, key)
            if not entry.objects:
                self.counts["dropped_images"] += 1
                continue
            self._images.append(entry)
        self.counts["images"] = len(self._images)
        self.counts["objects"] = sum(len(entry.objects) for entry in self._images)

    def __len__(self) -> int:
        return len(self._images)

    def file_of(self, index: int) -> str:
        """Path of the image at ``index``."""
        return str(self._images[index].path)

    def load(self, index: int) -> Sample:
        """Read image ``index`` and decode its masks."""
        from pycocotools import mask as mask_utils

        entry = self._images[index]
        image = read_image(entry.path)
        if image.shape[:2] != (entry.height, entry.width):
            raise DataError(
                f"{self.ann_file}: image {entry.path} is {image.shape[0]}x{image.shape[1]} (HxW) "
                f"but the json says {entry.height}x{entry.width}"
            )
        masks = mask_utils.decode([obj.rle for obj in entry.objects])  # H x W x N, Fortran order
        masks = np.ascontiguousarray(np.moveaxis(masks, 2, 0)).astype(bool)
        meta = {
            "file": str(entry.path),
            "image_id": entry.image_id,
            "orig_size": (entry.height, entry.width),
            "annotation_ids": [obj.annotation_id for obj in entry.objects],
            "class_names": dict(self.class_names),
        }
        class_ids = np.array([obj.category_id for obj in entry.objects], dtype=np.int64)
        ignore = None
        if entry.crowds:
            ignore = mask_utils.decode(entry.crowds).any(axis=2)
        return Sample(image=image, masks=masks, class_ids=class_ids, meta=meta, ignore=ignore)

    def _read_json(self) -> dict[str, Any]:
        try:
            with open(self.ann_file, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError as err:
            raise DataError(f"{self.ann_file}: annotation file not found") from err
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"{self.ann_file}: cannot read COCO json: {err}") from err
        if not isinstance(data, dict):
            raise DataError(
                f"{self.ann_file}: expected a COCO json object, got {type(data).__name__}"
            )
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DataError(f"{self.ann_file}: expected a list under {key!r}")
        return data

    def _categories(self, data: dict[str, Any]) -> dict[int, str]:
        names: dict[int, str] = {}
        for category in data["categories"]:
            if not isinstance(category, dict) or not _is_int(category.get("id")):
                raise DataError(f"{self.ann_file}: category {category!r} needs an integer 'id'")
            names[int(category["id"])] = str(category.get("name", category["id"]))
        return names

    def _image_entries(self, data: dict[str, Any]) -> dict[Any, _CocoImage | None]:
        images: dict[Any, _CocoImage | None] = {}
        for entry in data["images"]:
            if (
                not isinstance(entry, dict)
                or "id" not in entry
                or not isinstance(entry.get("file_name"), str)
            ):
                raise DataError(
                    f"{self.ann_file}: image entry {entry!r} needs 'id' and 'file_name'"
                )
            image_id = entry["id"]
            if image_id in images:
                raise DataError(f"{self.ann_file}: image id {image_id!r} is listed twice")
            height, width = entry.get("height"), entry.get("width")
            if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
                raise DataError(
                    f"{self.ann_file}: image {entry['file_name']} (id {image_id!r}) needs positive "
                    f"integer 'height' and 'width', got {height!r} x {width!r}"
                )
            images[image_id] = _CocoImage(
                self.root / entry["file_name"], image_id, height, width, []
            )
        return images

    def _attach_annotations(
        self, data: dict[str, Any], images: dict[Any, _CocoImage | None]
    ) -> None:
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                raise DataError(f"{self.ann_file}: annotation {ann!r} is not an object")
            ann_id = ann.get("id")
            if ann.get("image_id") not in images:
                raise DataError(
                    f"{self.ann_file}: annotation id {ann_id!r} points at image id "
                    f"{ann.get('image_id')!r}, which is not listed under 'images'"
                )
            entry = images[ann["image_id"]]
            if entry is None:
                continue
            crowd = bool(ann.get("iscrowd", 0))
            try:
                rle, area = self._check_annotation(ann, entry)
            except ValueError as err:
                self.reject(
                    str(entry.path),
                    f"{self.ann_file}: annotation id {ann_id!r} of image {entry.path}: {err}",
                )
                images[ann["image_id"]] = None
                continue
            if crowd:  # a region of many objects, not outlined one by one: not labelled
                entry.crowd_ignored += 1
                if rle is not None and area > 0:
                    entry.crowds.append(rle)
                continue
            if area == 0 and _outside(ann["segmentation"], entry.height, entry.width):
                entry.dropped_outside += 1
            elif area == 0:
                entry.dropped_empty += 1
            elif area < self.min_area:
                entry.dropped_small += 1
            else:
                entry.objects.append(_CocoObject(rle, int(ann["category_id"]), ann_id))

    def _check_annotation(
        self, ann: dict[str, Any], entry: _CocoImage
    ) -> tuple[dict[str, Any] | None, int]:
        category = ann.get("category_id")
        if not _is_int(category) or int(category) not in self.class_names:
            raise ValueError(
                f"category_id {category!r} is not one of the categories {sorted(self.class_names)}"
            )
        if "segmentation" not in ann:
            raise ValueError("no 'segmentation'")
        return segmentation_area(ann["segmentation"], height=entry.height, width=entry.width)


def _outside(segmentation: Any, height: int, width: int) -> bool:
    """Whether polygons lie wholly outside the ``height x width`` image (an RLE cannot)."""
    if not isinstance(segmentation, list) or not segmentation:
        return False
    points = np.concatenate([np.asarray(p, dtype=np.float64) for p in segmentation])
    xs, ys = points[0::2], points[1::2]
    return bool(xs.max() <= 0 or xs.min() >= width or ys.max() <= 0 or ys.min() >= height)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
