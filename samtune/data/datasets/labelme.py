"""LabelMe annotations: one json per image, objects as labelled polygons.

A json's ``imagePath`` (relative to the json) names its image; when that file is not there,
the image of that name beside the json is used (``imagePath`` often keeps the annotator's own
folder, e.g. ``C:\\Users\\...\\a.jpg``), else the image embedded in ``imageData``.
``shapes`` lists the objects.
Polygons are objects (shapes sharing a ``label`` and a ``group_id`` form one object, as
LabelMe groups them); rectangles are ignored and counted (``rectangles_ignored``), as are
circles, lines and points (``shapes_ignored``) and polygons whose label is not among the
classes (``labels_ignored``). Polygons and rectangles labelled ``__ignore__`` (the label
``labelme2voc`` reads as "not labelled") are no object: their pixels are the sample's ignore
mask, neither supervised nor scored (counted in ``ignore_shapes``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from samtune.data.datasets.objects import Item, ObjectFilesDataset, no_objects, polygon_mask
from samtune.data.io import decode_image_bytes
from samtune.data.sample import DataError, Sample

IGNORE_LABEL = "__ignore__"


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
    labels.discard(IGNORE_LABEL)
    return sorted(labels)


def _is_polygon(shape: dict[str, Any]) -> bool:
    return shape.get("shape_type") in (None, "polygon")


class LabelMeDataset(ObjectFilesDataset):
    """A folder of LabelMe jsons and their images.

    Args:
        root: folder of ``.json`` files (their images where ``imagePath`` says).
        classes: label names in class-id order (ids 1, 2, ...); polygons with other labels are
            ignored and counted. ``__ignore__`` is never a class.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
    """

    item_counts = ("ignore_shapes",)

    def __init__(
        self,
        *,
        root: str | Path,
        classes: Sequence[str],
        on_error: str = "raise",
        min_area: int = 1,
    ) -> None:
        if IGNORE_LABEL in [str(name) for name in classes]:
            raise ValueError(
                f"data.classes={list(classes)}: {IGNORE_LABEL} marks not-labelled regions, it "
                "cannot be a class"
            )
        names = {k + 1: str(name) for k, name in enumerate(classes)}
        super().__init__(class_names=names, on_error=on_error, min_area=min_area)
        self.root = Path(root)
        self._class_of = {name: k for k, name in names.items()}
        self.counts.update(
            rectangles_ignored=0, shapes_ignored=0, labels_ignored=0, ignore_shapes=0
        )
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
        """The image file's size, or the embedded image's (from its header: not decoded)."""
        if item.meta.get("image_source") != "imageData":
            return super().image_size(item)
        path: Path = item.source
        return embedded_size(embedded_image(path, read_labelme(path)), f"{path}: imageData")

    def read_item_image(self, item: Item, doc: dict[str, Any] | None = None) -> np.ndarray:
        """The image file, or the image embedded in the json's ``imageData`` (``doc``: the json
        already read, else it is read)."""
        if item.meta.get("image_source") != "imageData":
            return super().read_item_image(item)
        path: Path = item.source
        data = embedded_image(path, read_labelme(path) if doc is None else doc)
        return decode_image_bytes(data, f"{path}: imageData")

    def load(self, index: int) -> Sample:
        """Read image ``index`` and rasterise its shapes; the json is read once and an embedded
        image decoded once."""
        item = self._items[index]
        doc = read_labelme(item.source)
        image = self.read_item_image(item, doc)
        masks, class_ids, ignore = self.read_shapes(item, image.shape[:2], doc)
        return self.make_sample(item, image, masks, class_ids, ignore)

    def read_objects(self, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise the polygons of the item's json."""
        masks, class_ids, _ = self.read_shapes(item, size, read_labelme(item.source))
        return masks, class_ids

    def read_shapes(
        self, item: Item, size: tuple[int, int], doc: dict[str, Any]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(masks, class_ids, ignore)`` of the json ``doc`` of ``item``: the objects, and the
        union of its ``__ignore__`` shapes (None when it has none)."""
        path: Path = item.source
        declared = (doc.get("imageHeight"), doc.get("imageWidth"))
        if None not in declared and tuple(declared) != tuple(size):
            raise DataError(
                f"{path}: says the image is {declared[0]}x{declared[1]} (HxW) but {item.image} "
                f"is {size[0]}x{size[1]}"
            )
        counts = {
            "rectangles_ignored": 0,
            "shapes_ignored": 0,
            "labels_ignored": 0,
            "ignore_shapes": 0,
        }
        objects: dict[Any, tuple[int, np.ndarray]] = {}
        ignore: np.ndarray | None = None
        for number, shape in enumerate(doc["shapes"]):
            if not isinstance(shape, dict):
                raise DataError(f"{path}: shape {number} is not an object")
            label = str(shape.get("label"))
            if label == IGNORE_LABEL and shape.get("shape_type") in (None, "polygon", "rectangle"):
                region = _ignore_region(path, number, shape, size)
                ignore = region if ignore is None else ignore | region
                counts["ignore_shapes"] += 1
                continue
            if not _is_polygon(shape):
                key = (
                    "rectangles_ignored"
                    if shape.get("shape_type") == "rectangle"
                    else "shapes_ignored"
                )
                counts[key] += 1
                continue
            if label not in self._class_of:
                counts["labels_ignored"] += 1
                continue
            points = _points(path, number, shape, minimum=3)
            group = shape.get("group_id")
            key = (label, group) if group is not None else ("#", number)
            mask = polygon_mask(points, size)
            if key in objects:
                mask |= objects[key][1]
            objects[key] = (self._class_of[label], mask)
        item.counts = counts
        if not objects:
            return (*no_objects(size), ignore)
        return (
            np.stack([mask for _, mask in objects.values()]),
            np.array([cls for cls, _ in objects.values()], dtype=np.int64),
            ignore,
        )


def _points(path: Path, number: int, shape: dict[str, Any], *, minimum: int) -> np.ndarray:
    """The ``K x 2`` points of a shape, at least ``minimum`` of them.

    Raises:
        DataError: naming the json, the shape and what it holds.
    """
    points = np.asarray(shape.get("points"), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < minimum:
        raise DataError(
            f"{path}: shape {number} ({shape.get('label')!r}) needs at least {minimum} [x, y] "
            f"points, got {shape.get('points')!r}"
        )
    return points


def _ignore_region(
    path: Path, number: int, shape: dict[str, Any], size: tuple[int, int]
) -> np.ndarray:
    """The pixels of an ``__ignore__`` polygon or rectangle (two opposite corners)."""
    if shape.get("shape_type") != "rectangle":
        return polygon_mask(_points(path, number, shape, minimum=3), size)
    (x0, y0), (x1, y1) = _points(path, number, shape, minimum=2)[:2]
    corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return polygon_mask(np.asarray(corners, dtype=np.float64), size)


def embedded_size(data: bytes, name: str) -> tuple[int, int]:
    """``(height, width)`` of an encoded image held in memory, from its header only.

    Raises:
        DataError: ``"<name>: cannot read image: <reason>"``.
    """
    source = io.BytesIO(data)
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            import tifffile

            with tifffile.TiffFile(source) as tif:
                dims = dict(zip(tif.series[0].axes, tif.series[0].shape, strict=True))
            return int(dims["Y"]), int(dims["X"])
        from PIL import Image

        with Image.open(source) as image:
            width, height = image.size
        return int(height), int(width)
    except Exception as err:
        raise DataError(f"{name}: cannot read image: {err}") from err
