"""Writing predicted masks: one 0/255 PNG per object and ``masks.json`` with COCO results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samtune.io_atomic import atomic_write


def coco_result(
    mask: np.ndarray, *, image_id: int, file_name: str, index: int, score: float
) -> dict[str, Any]:
    """One COCO-style result with an RLE segmentation (pycocotools) for a ``H x W`` bool mask."""

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    area, bbox = float(mask_utils.area(rle)), mask_utils.toBbox(rle).tolist()
    rle["counts"] = rle["counts"].decode("ascii")
    return {
        "image_id": image_id,
        "file_name": file_name,
        "object": index,
        "category_id": 1,
        "segmentation": rle,
        "score": float(score),
        "area": area,
        "bbox": bbox,
    }


def write_mask_png(out_dir: Path, file_name: str, index: int, mask: np.ndarray) -> str:
    """Write object ``index`` of image ``file_name`` as ``<stem>_<index>.png`` (0/255).

    Returns:
        The PNG's file name (inside ``out_dir``).
    """
    name = f"{Path(file_name).stem}_{index}.png"
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    atomic_write(out_dir / name, lambda tmp: image.save(tmp, format="PNG"))
    return name


def write_results(out_dir: Path, results: list[dict[str, Any]]) -> Path:
    """Write the COCO ``results`` to ``out_dir/masks.json`` atomically and return its path."""
    path = out_dir / "masks.json"
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(results)))
    return path
