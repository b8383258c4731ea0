"""Writing predicted masks: one 0/255 PNG per object and ``masks.json`` with COCO results.

A prediction writes into a staging folder inside ``out`` (:func:`staged_output`) and moves its
files into place only when every image succeeded: a run that fails on its tenth image leaves
``out`` as it found it. :func:`check_output_folder` refuses an ``out`` that cannot be written
before any model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from samtune.data.sample import DataError
from samtune.io_atomic import atomic_write

STAGING_PREFIX = ".samtune-predict-"


class OutputError(DataError):
    """``out`` cannot receive the prediction (a file, not writable); the message names it."""

    label = "cannot write"


def check_output_folder(out: str | os.PathLike) -> Path:
    """``out`` as a folder samtune-predict can write into, created if missing.

    Raises:
        OutputError: ``out`` is an existing file, or it (or the folder it would be made in)
            cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"out={out} is an existing file, not a folder for the masks")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=STAGING_PREFIX, delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"out={out} cannot be written: {exc.strerror or exc}") from None
    return out


@contextlib.contextmanager
def staged_output(out: str | os.PathLike) -> Iterator[Path]:
    """A staging folder inside ``out``; its files move into ``out`` when the block succeeds.

    ``masks.json`` moves last, so a reader who sees it sees every mask it names. When the block
    raises, the staging folder is deleted and ``out`` keeps what it held before.
    """
    out = check_output_folder(out)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    try:
        yield staging
        names = sorted(p.name for p in staging.iterdir())
        for name in sorted(names, key=lambda n: n == "masks.json"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
