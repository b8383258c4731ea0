"""Write what a datamodule reads, in any layout, as one COCO instance-segmentation json.

Users see exactly what samtune understood of their data, and other tools can read it. Each
image entry names its file (relative to the json's folder when it can) and carries the split it
came from (``"split"``); masks are compressed RLE. Samples that are not image files (slices of
volumes) are written as PNG files into ``<json stem>_images/`` next to the json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from samtune.io_atomic import write_text_atomic

SPLITS = ("train", "val", "test")


def write_coco(
    datamodule: Any, out: str | Path, *, splits: tuple[str, ...] | list[str] = SPLITS
) -> dict[str, Any]:
    """Read every sample of ``splits`` and write them as one COCO json at ``out`` (atomically).

    A split the datamodule does not define, or that cannot be built, is left out and named in
    the returned ``missing``. Images skipped for bad data (``on_error="skip"``) are not written.
    A sample's ignore mask (pixels not labelled) is written as one ``iscrowd=1`` annotation of
    the image (category: its first object's), which the COCO reader reads back as ignore.

    Args:
        datamodule: any :class:`~samtune.data.datamodules.base.SamDataModule`.
        out: the json file to write.
        splits: the splits to include.

    Returns:
        ``{"file", "images", "annotations", "categories", "per_split": {split: images},
        "missing": {split: reason}, "ignore_regions"}`` (``annotations`` counts the crowd
        annotations of the ignore regions too).
    """
    from PIL import Image
    from pycocotools import mask as mask_utils

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    names: dict[int, str] = {}
    per_split: dict[str, int] = {}
    missing: dict[str, str] = {}
    ignore_regions = 0
    for split in splits:
        try:
            dataset = datamodule.raw_dataset(split)
        except Exception as err:  # a split the layout does not hold, or a bad one
            missing[split] = str(err)
            continue
        per_split[split] = 0
        for index in range(len(dataset)):
            sample = dataset[index]
            if sample is None:
                continue
            file = Path(str(sample.meta.get("file", "")))
            if "slice" in sample.meta or not file.is_file():
                stem = f"{split}_{sample.meta.get('volume', file.stem)}_{sample.meta.get('slice', index)}"
                file = out.parent / f"{out.stem}_images" / f"{stem}.png"
                file.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(sample.image).save(file)
            image_id = len(images) + 1
            height, width = sample.image.shape[:2]
            images.append({
                "id": image_id, "file_name": _relative(file, out.parent), "height": height,
                "width": width, "split": split,
            })  # fmt: skip
            for key, value in (sample.meta.get("class_names") or {}).items():
                names.setdefault(int(key), str(value))
            for mask, class_id in zip(sample.masks, sample.class_ids.tolist(), strict=True):
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": int(class_id),
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                    "area": int(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": 0,
                })  # fmt: skip
                names.setdefault(int(class_id), str(class_id))
            if sample.ignore is not None:  # not labelled: a crowd region, as COCO marks one
                category = int(sample.class_ids[0]) if len(sample.class_ids) else 1
                names.setdefault(category, str(category))
                rle = mask_utils.encode(np.asfortranarray(sample.ignore.astype(np.uint8)))
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                    "area": int(sample.ignore.sum()),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 1,
                })  # fmt: skip
                ignore_regions += 1
            per_split[split] += 1
    categories = [{"id": k, "name": names[k]} for k in sorted(names)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    write_text_atomic(out, json.dumps(data))
    return {
        "file": str(out), "images": len(images), "annotations": len(annotations),
        "categories": categories, "per_split": per_split, "missing": missing,
        "ignore_regions": ignore_regions,
    }  # fmt: skip


def _relative(file: Path, folder: Path) -> str:
    try:
        return os.path.relpath(file.resolve(), folder)
    except ValueError:  # another drive (Windows)
        return str(file.resolve())
