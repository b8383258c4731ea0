"""LabelMe annotations: one json per image, objects as labelled polygons.

A json's ``imagePath`` (relative to the json) names its image; when that file is not there,
the image of that name beside the json is used (``imagePath`` often keeps the annotator's own
folder, e.g. ``C:\\Users\\...\\a.jpg``), else the image embedded in ``imageData``.
``shapes`` lists the objects.
Polygons are objects (shapes sharing a ``label`` and a ``group_id`` form one object, as
LabelMe groups them); rectangles are ignored and counted (``rectangles_ignored``), as are
circles, lines and points (``shapes_ignored``) and polygons whose label is not among the
classes (``labels_ignored``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from samtune.data.datasets.objects import Item, ObjectFilesDataset, no_objects, polygon_mask
from samtune.data.io import decode_image_bytes
from samtune.data.sample import DataError


def list_jsons(folder: str | Path) -> list[Path]:
    """The visible ``.json`` files of ``folder``.

    Raises:
        DataError: the folder is missing or holds no json.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: LabelMe folder not found")
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
    if not files:
        raise DataError(f"{folder}: no LabelMe .json files found")
    return files


def read_labelme(path: Path) -> dict[str, Any]:
    """A LabelMe json, checked to hold ``imagePath`` and a list of ``shapes``.

    Raises:
        DataError: naming the file.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: cannot read LabelMe json: {err}") from err
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("imagePath"), str)
        or not isinstance(doc.get("shapes"), list)
    ):
        raise DataError(f"{path}: not a LabelMe file (expected 'imagePath' and a list 'shapes')")
    return doc


def find_image(path: Path, doc: dict[str, Any]) -> tuple[Path, bool]:
    """The image of LabelMe json ``path`` and whether it comes from ``imageData``.

    Tried in order: ``imagePath`` relative to the json (Windows separators accepted), the file of
    that name in the json's folder, then the embedded ``imageData``. With none of them the
    first path is returned, so the error names where the image was expected.
    """
    image_path = doc["imagePath"].replace("\\", "/")
    stated = path.parent / image_path
    if stated.is_file():
        return stated, False
    beside = path.parent / PureWindowsPath(doc["imagePath"]).name
    if beside.is_file():
        return beside, False
    if isinstance(doc.get("imageData"), str) and doc["imageData"]:
        return stated, True
    return stated, False


def embedded_image(path: Path, doc: dict[str, Any]) -> bytes:
    """The bytes of the image embedded in ``imageData`` (base64).

    Raises:
        DataError: naming the json, when ``imageData`` is missing or not base64.
    """
    data = doc.get("imageData")
    if not isinstance(data, str) or not data:
        raise DataError(f"{path}: no imageData to read the image from")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise DataError(f"{path}: imageData is not base64: {err}") from err


def polygon_labels(files: Sequence[Path]) -> list[str]:
    """The sorted labels of the polygons in ``files`` (unreadable files are passed over here;
    the dataset reports them)."""
    labels: set[str] = set()
    for path in files:
        try:
            doc = read_labelme(path)
        except DataError:
            continue
        for shape in doc["shapes"]:
            if isinstance(shape, dict) and _is_polygon(shape):
                labels.add(str(shape.get("label")))
    return sorted(labels)


def _is_polygon(shape: dict[str, Any]) -> bool:
    return shape.get("shape_type") in (None, "polygon")


class LabelMeDataset(ObjectFilesDataset):
    """A folder of LabelMe jsons and their images.

    Args:
        root: folder of ``.json`` files (their images where ``imagePath`` says).
        classes: label names in class-id order (ids 1, 2, ...); polygons with other labels are
            ignored and counted.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        classes: Sequence[str],
        on_error: str = "raise",
        min_area: int = 1,
    ) -> None:
        names = {k + 1: str(name) for k, name in enumerate(classes)}
        super().__init__(class_names=names, on_error=on_error, min_area=min_area)
        self.root = Path(root)
        self._class_of = {name: k for k, name in names.items()}
        self.counts.update(rectangles_ignored=0, shapes_ignored=0, labels_ignored=0)
        items = []
        for path in list_jsons(self.root):
            try:
                doc = read_labelme(path)
            except DataError as err:
                self.reject(str(path), str(err))
                continue
            image, embedded = find_image(path, doc)
            meta = {"json": str(path)}
            if embedded:
                meta["image_source"] = "imageData"
            items.append(Item(image=image, image_id=path.stem, source=path, meta=meta))
        self.index(items)

    def image_size(self, item: Item) -> tuple[int, int]:
        """The image file's size, or the embedded image's (decoded to read it)."""
        if item.meta.get("image_source") != "imageData":
            return super().image_size(item)
        return tuple(self.read_item_image(item).shape[:2])

    def read_item_image(self, item: Item) -> np.ndarray:
        """The image file, or the image embedded in the json's ``imageData``."""
        if item.meta.get("image_source") != "imageData":
            return super().read_item_image(item)
        path: Path = item.source
        return decode_image_bytes(embedded_image(path, read_labelme(path)), f"{path}: imageData")

    def read_objects(self, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise the polygons of the item's json."""
        path: Path = item.source
        doc = read_labelme(path)
        declared = (doc.get("imageHeight"), doc.get("imageWidth"))
        if None not in declared and tuple(declared) != tuple(size):
            raise DataError(
                f"{path}: says the image is {declared[0]}x{declared[1]} (HxW) but {item.image} "
                f"is {size[0]}x{size[1]}"
            )
        counts = {"rectangles_ignored": 0, "shapes_ignored": 0, "labels_ignored": 0}
        objects: dict[Any, tuple[int, np.ndarray]] = {}
        for number, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict):
                raise DataError(f"{path}: shape {number} is not an object")
            if not _is_polygon(shape):
                key = (
                    "rectangles_ignored"
                    if shape.get("shape_type") == "rectangle"
                    else "shapes_ignored"
                )
                counts[key] += 1
                continue
            label = str(shape.get("label"))
            if label not in self._class_of:
                counts["labels_ignored"] += 1
                continue
            points = np.asarray(shape.get("points"), dtype=np.float64)
            if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
                raise DataError(
                    f"{path}: shape {number} ({label!r}) needs at least 3 [x, y] points, got "
                    f"{shape.get('points')!r}"
                )
            group = shape.get("group_id")
            key = (label, group) if group is not None else ("#", number)
            mask = polygon_mask(points, size)
            if key in objects:
                mask |= objects[key][1]
            objects[key] = (self._class_of[label], mask)
        item.counts = counts
        if not objects:
            return no_objects(size)
        return (
            np.stack([mask for _, mask in objects.values()]),
            np.array([cls for cls, _ in objects.values()], dtype=np.int64),
        )
