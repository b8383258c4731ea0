"""Cut volumes into 2D slices along one axis, choose which slices to keep, make ``Sample``s.

A slice along ``axis`` keeps the two other axes in array order: for ``axis=2`` the image's
rows are the volume's ``i`` index and its columns the ``j`` index (no transpose or flip), so
predictions put back with ``slice_view`` land on the same voxels.

Slices with at least one object are always kept. Each slice without objects is kept when a
uniform draw for it is below ``empty_slice_rate``; the draws depend only on ``seed`` and the
volume's key, so the choice is the same on every run, and the slices kept at a lower rate are
a subset of those kept at a higher rate.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from samtune.data.datasets.volumes.labels import class_names_for, objects_from_label_slice
from samtune.data.sample import Sample

AXES = (0, 1, 2)


def check_axis(axis: int) -> int:
    """Return ``axis`` if it is 0, 1 or 2; raise ``ValueError`` otherwise."""
    if isinstance(axis, bool) or axis not in AXES:
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    return int(axis)


def slice_view(volume: np.ndarray, *, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` of a 3D array along ``axis``, as a writable view (of a
    ``[i, j, k, channel]`` array: the ``H x W x channel`` slice).

    Raises:
        ValueError: not a 3D array (or 3D with channels last), a bad axis, or an index out of
            range.
    """
    axis = check_axis(axis)
    if volume.ndim not in (3, 4):
        raise ValueError(f"expected a 3D volume, got shape {volume.shape}")
    if not 0 <= index < volume.shape[axis]:
        raise ValueError(
            f"slice {index} is out of range for axis {axis} of a volume of shape {volume.shape}"
        )
    where: list[Any] = [slice(None)] * volume.ndim
    where[axis] = int(index)
    return volume[tuple(where)]


def slices_with_objects(
    label_volume: np.ndarray,
    *,
    axis: int,
    mode: str = "instance",
    classes: Mapping[int, str] | None = None,
    min_area: int = 1,
    connectivity: int = 8,
) -> np.ndarray:
    """For each slice along ``axis``, whether ``objects_from_label_slice`` finds an object in it.

    Returns:
        A bool array with one entry per slice.
    """
    axis = check_axis(axis)
    foreground = label_volume != 0 if classes is None else np.isin(label_volume, list(classes))
    others = tuple(a for a in AXES if a != axis)
    has = foreground.any(axis=others)
    if min_area > 1:
        for index in np.flatnonzero(has):
            label2d = slice_view(label_volume, axis=axis, index=int(index))
            masks, _ = objects_from_label_slice(
                label2d, mode=mode, classes=classes, min_area=min_area, connectivity=connectivity
            )
            has[index] = masks.shape[0] > 0
    return has


def select_slices(
    has_objects: np.ndarray, *, empty_slice_rate: float, seed: int, key: str
) -> np.ndarray:
    """Indices of the slices to keep: all with objects, and empty ones at ``empty_slice_rate``.

    Args:
        has_objects: one bool per slice (see ``slices_with_objects``).
        empty_slice_rate: probability in ``[0, 1]`` of keeping a slice without objects
            (0 drops them all, 1 keeps them all).
        seed: the random seed.
        key: names the volume (e.g. ``"case01:axis2"``) so each volume gets its own draws.

    Returns:
        Sorted slice indices (int64).

    Raises:
        ValueError: a rate outside ``[0, 1]``.
    """
    if not 0.0 <= empty_slice_rate <= 1.0:
        raise ValueError(f"empty_slice_rate must be in [0, 1], got {empty_slice_rate!r}")
    has_objects = np.asarray(has_objects, dtype=bool)
    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    draws = rng.random(has_objects.shape[0])
    keep = has_objects | (draws < empty_slice_rate)
    return np.flatnonzero(keep).astype(np.int64)


def slice_to_sample(
    image2d: np.ndarray,
    label2d: np.ndarray,
    *,
    mode: str = "instance",
    classes: Mapping[int, str] | None = None,
    min_area: int = 1,
    connectivity: int = 8,
    meta: Mapping[str, Any] | None = None,
) -> Sample:
    """One ``Sample`` from a uint8 image slice and its label slice.

    A 2D image is repeated into 3 channels (an ``H x W x 3`` one is kept); the objects come from ``objects_from_label_slice``.
    ``meta`` is copied and ``class_names`` added (the given classes, or the values present).

    Raises:
        DataError: image and label slices of different sizes (raised by ``Sample``).
        ValueError: an image slice that is not 2D uint8.
    """
    rgb = image2d.ndim == 3 and image2d.shape[2] == 3
    if not (image2d.ndim == 2 or rgb) or image2d.dtype != np.uint8:
        raise ValueError(f"expected a 2D uint8 image slice, got {image2d.shape} {image2d.dtype}")
    masks, class_ids = objects_from_label_slice(
        label2d, mode=mode, classes=classes, min_area=min_area, connectivity=connectivity
    )
    image = np.ascontiguousarray(image2d if rgb else np.repeat(image2d[:, :, None], 3, axis=2))
    info = dict(meta or {})
    info["class_names"] = class_names_for(classes, class_ids)
    return Sample(image=image, masks=masks, class_ids=class_ids, meta=info)
