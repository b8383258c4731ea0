"""Objects (binary masks with a class id) from a 2D slice of a label map.

Value 0 is background. In ``semantic`` mode each class value present is one object; in
``instance`` mode each connected component of each class value is one object. Components use
8-connectivity by default (pixels touching at a corner belong together, so a thin diagonal
structure stays one object); pass ``connectivity=4`` for edge-sharing neighbours only.
Objects come out ordered by class value, then by component in raster order (the order of
``scipy.ndimage.label``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

MODES = ("instance", "semantic")


def validate_classes(classes: Mapping[Any, Any] | None) -> dict[int, str] | None:
    """Check a ``{class value: name}`` mapping and return it with int keys and str names.

    Raises:
        ValueError: a key that is not a positive integer (0 is background).
    """
    if classes is None:
        return None
    out: dict[int, str] = {}
    for key, name in classes.items():
        try:
            value = int(key)
        except (TypeError, ValueError):
            raise ValueError(
                f"class keys must be label values (integers > 0), got {key!r}"
            ) from None
        if isinstance(key, bool) or str(value) != str(key) or value <= 0:
            raise ValueError(f"class keys must be label values (integers > 0), got {key!r}")
        out[value] = str(name)
    if not out:
        raise ValueError(
            "classes is empty; give None to use every label value, or list the classes"
        )
    return out


def class_names_for(classes: Mapping[int, str] | None, class_ids: np.ndarray) -> dict[int, str]:
    """``meta["class_names"]``: the given mapping, or ``{value: str(value)}`` for the ids present."""
    if classes is not None:
        return dict(classes)
    return {int(c): str(int(c)) for c in np.unique(class_ids)}


def objects_from_label_slice(
    label2d: np.ndarray,
    *,
    mode: str = "instance",
    classes: Mapping[int, str] | None = None,
    min_area: int = 1,
    connectivity: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Split a 2D label map into binary object masks.

    Args:
        label2d: ``H x W`` integer label map, 0 = background.
        mode: ``"instance"`` (one object per connected component of each class value) or
            ``"semantic"`` (one object per class value present).
        classes: ``{value: name}``; when given, values not listed are ignored.
        min_area: objects with fewer pixels are dropped.
        connectivity: 8 or 4, for ``instance`` mode.

    Returns:
        ``(masks, class_ids)``: ``N x H x W`` bool and ``N`` int64; ``N`` may be 0.

    Raises:
        ValueError: a bad mode, connectivity or label map (not 2D, not integer, negative values).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    label2d = np.asarray(label2d)
    if label2d.ndim != 2:
        raise ValueError(f"expected a 2D label slice, got shape {label2d.shape}")
    if label2d.dtype == bool:
        label2d = label2d.astype(np.uint8)
    if not np.issubdtype(label2d.dtype, np.integer):
        raise ValueError(f"label slice must hold integers, got dtype {label2d.dtype}")
    values = np.unique(label2d)
    if values.size and values[0] < 0:
        raise ValueError(f"label values must be >= 0, found {values[0]}")
    values = [int(v) for v in values if v != 0 and (classes is None or int(v) in classes)]

    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else None
    masks: list[np.ndarray] = []
    class_ids: list[int] = []
    for value in values:
        region = label2d == value
        if mode == "semantic":
            if region.sum() >= min_area:
                masks.append(region)
                class_ids.append(value)
            continue
        components, count = ndimage.label(region, structure=structure)
        areas = np.bincount(components.ravel(), minlength=count + 1)
        for index in range(1, count + 1):
            if areas[index] >= min_area:
                masks.append(components == index)
                class_ids.append(value)
    if not masks:
        return np.zeros((0, *label2d.shape), dtype=bool), np.zeros(0, dtype=np.int64)
    return np.stack(masks), np.asarray(class_ids, dtype=np.int64)
