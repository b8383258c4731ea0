"""Prompts files: read and check the objects to segment in a folder of images.

The prompts file of :func:`samtune.inference.folder.predict_folder` (``samtune-predict prompts=prompts.json``) maps an
image file name (inside ``images``) to a list of objects; each object has points, a box, or both::

    {
      "cells_01.png": [
        {"points": [[120, 84], [131, 90]], "labels": [1, 0]},
        {"box": [30, 40, 95, 110]},
        {"box": [200, 10, 250, 60], "points": [[225, 35]], "labels": [1]}
      ]
    }

Points are ``[x, y]`` pixels of the original image (``0 <= x < width``, ``0 <= y < height``);
labels are 1 (foreground) or 0 (background), one per point (all 1 when ``labels`` is left
out); a box is ``[x1, y1, x2, y2]`` with ``0 <= x1 < x2 <= width`` and ``0 <= y1 < y2 <= height``.
Object ``k`` (0-based, in list order) of ``cells_01.png`` is written as ``cells_01_<k>.png``
(0/255); all objects go into ``masks.json`` as COCO results with RLE segmentations.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.io import read_size


class PromptError(ValueError):
    """A prompts file does not fit its images; the message names the image and the problem."""


@dataclass(frozen=True)
class ObjectPrompt:
    """The prompt of one object, in original-image pixels.

    Attributes:
        points: ``P x 2`` float (x, y), or None.
        labels: ``P`` int (1 foreground, 0 background), or None.
        box: ``4`` float XYXY, or None.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None


def _as_points(value: Any, where: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise PromptError(
            f"{where}: 'points' must be a non-empty list of [x, y] pairs, got {value!r}"
        )
    return points


def parse_object(obj: Any, *, height: int, width: int, where: str) -> ObjectPrompt:
    """Check one object of a prompts file against its image size and convert it.

    Raises:
        PromptError: naming ``where`` (image and object) and the problem.
    """
    if not isinstance(obj, dict):
        raise PromptError(
            f"{where}: an object must be a dict with 'points'/'labels' and/or 'box', got {obj!r}"
        )
    unknown = set(obj) - {"points", "labels", "box"}
    if unknown:
        raise PromptError(
            f"{where}: unknown keys {sorted(unknown)}; expected 'points', 'labels', 'box'"
        )
    if "points" not in obj and "box" not in obj:
        raise PromptError(f"{where}: the object has neither 'points' nor 'box'")
    points = labels = box = None
    if "points" in obj:
        points = _as_points(obj["points"], where)
        raw = obj.get("labels", [1] * len(points))
        labels = np.asarray(raw)
        if labels.ndim != 1 or len(labels) != len(points):
            raise PromptError(
                f"{where}: {len(points)} points but labels {raw!r} (need one label per point)"
            )
        if not np.isin(labels, (0, 1)).all():
            raise PromptError(
                f"{where}: labels must be 1 (foreground) or 0 (background), got {raw!r}"
            )
        labels = labels.astype(np.int64)
        outside = (
            (points[:, 0] < 0)
            | (points[:, 0] >= width)
            | (points[:, 1] < 0)
            | (points[:, 1] >= height)
        )
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise PromptError(
                f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} (WxH) image"
            )
    elif "labels" in obj:
        raise PromptError(f"{where}: 'labels' given without 'points'")
    if "box" in obj:
        try:
            box = np.asarray(obj["box"], dtype=np.float64)
        except (TypeError, ValueError):
            box = np.zeros(0)
        if box.shape != (4,):
            raise PromptError(f"{where}: 'box' must be [x1, y1, x2, y2], got {obj['box']!r}")
        x1, y1, x2, y2 = box
        if x2 <= x1 or y2 <= y1:
            raise PromptError(f"{where}: box {obj['box']!r} needs x2 > x1 and y2 > y1")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise PromptError(
                f"{where}: box {obj['box']!r} is outside the {width}x{height} (WxH) image"
            )
    return ObjectPrompt(points=points, labels=labels, box=box)


def read_prompts(
    prompts_file: str | os.PathLike, images_dir: str | os.PathLike
) -> dict[str, list[ObjectPrompt]]:
    """Read and check a whole prompts file before anything is predicted.

    Returns:
        Image file name -> its objects, in file order.

    Raises:
        PromptError: for an unreadable file, a listed image that is missing, or a bad object,
            naming the image and the problem.
    """
    prompts_file, images_dir = Path(prompts_file), Path(images_dir)
    try:
        raw = json.loads(prompts_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptError(f"cannot read prompts file {prompts_file}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise PromptError(
            f"{prompts_file}: expected a non-empty JSON object mapping image file names to lists of objects"
        )
    stems: dict[str, str] = {}
    parsed: dict[str, list[ObjectPrompt]] = {}
    for image_name, objects in raw.items():
        image_path = images_dir / image_name
        if not image_path.is_file():
            raise PromptError(
                f"{prompts_file}: image {image_name!r} is listed but {image_path} does not exist"
            )
        stem = Path(image_name).stem
        if stem in stems:
            raise PromptError(
                f"{prompts_file}: images {stems[stem]!r} and {image_name!r} would write the same mask files"
            )
        stems[stem] = image_name
        if not isinstance(objects, list) or not objects:
            raise PromptError(
                f"{prompts_file}: image {image_name!r} needs a non-empty list of objects, got {objects!r}"
            )
        height, width = read_size(image_path)
        parsed[image_name] = [
            parse_object(
                obj,
                height=height,
                width=width,
                where=f"{prompts_file}: image {image_name!r}, object {k}",
            )
            for k, obj in enumerate(objects)
        ]
    return parsed
