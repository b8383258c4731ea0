"""YOLO segmentation labels (Ultralytics and Roboflow exports) as a dataset of ``Sample``.

Each image ``.../images/<name>.<ext>`` has a label file ``.../labels/<name>.txt`` (the last
``images`` folder of the path replaced by ``labels``) with one object per line:
``<class> x1 y1 x2 y2 ...``, a polygon in coordinates normalised to 0..1 by the image's width
and height. A line of four numbers after the class is a detection box, not a mask: it is
ignored and counted (``boxes_ignored``). An image without a label file has no objects
(``unlabelled``), as Ultralytics treats it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samtune.data.datasets.objects import Item, ObjectFilesDataset, no_objects, polygon_mask
from samtune.data.io import IMAGE_SUFFIXES
from samtune.data.sample import DataError

COORD_TOLERANCE = 0.01  # normalised coordinates up to this far outside 0..1 are clipped


def label_file_for(image: Path) -> Path:
    """The label file of ``image``: its last ``images`` folder replaced by ``labels``, ``.txt``.

    Raises:
        DataError: the image's path holds no ``images`` folder.
    """
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise DataError(f"{image}: YOLO images must be in a folder named images/ (labels/ next to it)")


def parse_label_file(path: Path, num_classes: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """``([(class index, K x 2 normalised polygon)], boxes ignored)`` of a YOLO label file.

    Raises:
        DataError: naming the file and line, for an unknown class, an odd or too short list of
            coordinates, text that is not a number, or coordinates far outside 0..1.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read YOLO label file: {err}") from err
    objects, boxes = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            cls, coords = int(fields[0]), np.array([float(v) for v in fields[1:]])
        except ValueError:
            raise DataError(
                f"{where}: expected '<class> x1 y1 x2 y2 ...' (numbers), got {line.strip()!r}"
            ) from None
        if not 0 <= cls < num_classes:
            raise DataError(
                f"{where}: class {cls} is not one of the {num_classes} classes of data.yaml "
                f"(0..{num_classes - 1})"
            )
        if coords.size == 4:
            boxes += 1
            continue
        if coords.size < 6 or coords.size % 2:
            raise DataError(
                f"{where}: a polygon needs an even number (>= 6) of coordinates, got {coords.size}"
            )
        if (
            not np.isfinite(coords).all()
            or coords.min() < -COORD_TOLERANCE
            or coords.max() > 1 + COORD_TOLERANCE
        ):
            raise DataError(
                f"{where}: coordinates must be normalised to 0..1, found {coords.min():g}..{coords.max():g}"
            )
        objects.append((cls, np.clip(coords, 0.0, 1.0).reshape(-1, 2)))
    return objects, boxes


class YoloDataset(ObjectFilesDataset):
    """The images of one or more ``images`` folders with their YOLO segmentation labels.

    ``class_ids`` are the YOLO class index + 1 (0 stays "no class"); ``meta["class_names"]``
    maps them to the names of ``data.yaml``; ``meta`` adds ``label_file``.

    Args:
        images: a folder of images, or a list of folders and image files.
        names: the class names, in YOLO class-index order.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
    """

    def __init__(
        self,
        *,
        images: str | Path | list[str | Path],
        names: list[str],
        on_error: str = "raise",
        min_area: int = 1,
    ) -> None:
        class_names = {k + 1: str(name) for k, name in enumerate(names)}
        super().__init__(class_names=class_names, on_error=on_error, min_area=min_area)
        self.counts.update(boxes_ignored=0, unlabelled=0)
        folders = [Path(images)] if isinstance(images, (str, Path)) else [Path(p) for p in images]
        items = []
        for folder in folders:
            if folder.is_file():  # one image named by a split's .txt list
                if folder.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DataError(
                        f"{folder}: not an image file (expected one of {', '.join(IMAGE_SUFFIXES)})"
                    )
                files = [folder]
            elif folder.is_dir():
                files = sorted(
                    p
                    for p in folder.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                )
            else:
                raise DataError(f"{folder}: YOLO images folder not found")
            for image in files:
                label = label_file_for(image)
                items.append(
                    Item(
                        image=image,
                        image_id=image.stem,
                        source=label,
                        meta={"label_file": str(label)},
                    )
                )
        if not items:
            raise DataError(f"{', '.join(map(str, folders))}: no image files found")
        self.index(items)

    def read_objects(self, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Rasterise the item's polygons at ``size``."""
        label: Path = item.source
        if not label.is_file():
            item.counts = {"unlabelled": 1}
            return no_objects(size)
        objects, boxes = parse_label_file(label, len(self.class_names))
        item.counts = {"boxes_ignored": boxes}
        if not objects:
            return no_objects(size)
        height, width = size
        masks = np.stack([polygon_mask(poly * [width, height], size) for _, poly in objects])
        return masks, np.array([cls + 1 for cls, _ in objects], dtype=np.int64)
