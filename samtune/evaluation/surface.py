"""Normalised surface distance (NSD, "surface Dice") of 3D masks at a tolerance in mm.

The surface of a mask is its foreground voxels with a background 6-neighbour (outside the
volume counts as background, so an object cut by the volume's edge has a surface there).
Distances are Euclidean in mm, from the voxel spacing. With ``S_p`` and ``S_g`` the surfaces of
the prediction and the ground truth,

    NSD = (|{p in S_p: d(p, S_g) <= tau}| + |{g in S_g: d(g, S_p) <= tau}|) / (|S_p| + |S_g|),

counting surface voxels (not surface areas). NaN when both masks are empty (as 3D Dice in
:mod:`samtune.evaluation.volumes`), 0 when only one is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

_SIX = ndimage.generate_binary_structure(3, 1)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Foreground voxels of a 3D ``mask`` with a background 6-neighbour (or on the volume's edge)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"a 3D mask is needed, got shape {mask.shape}")
    return mask & ~ndimage.binary_erosion(mask, structure=_SIX, border_value=0)


def normalized_surface_distance(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """NSD of two 3D masks (see the module docstring).

    Args:
        pred: predicted mask.
        gt: ground-truth mask, same shape.
        spacing: voxel size per axis in mm (three positive numbers).
        tolerance_mm: the distance within which a surface voxel counts as matched.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction is {pred.shape}, ground truth is {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive voxel sizes in mm, got {spacing}")
    if float(tolerance_mm) < 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    sp, sg = surface_voxels(pred), surface_voxels(gt)
    n_p, n_g = int(sp.sum()), int(sg.sum())
    if n_p == 0 and n_g == 0:
        return float("nan")
    if n_p == 0 or n_g == 0:
        return 0.0
    to_g = ndimage.distance_transform_edt(~sg, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    matched = int((to_g[sp] <= tolerance_mm).sum()) + int((to_p[sg] <= tolerance_mm).sum())
    return matched / (n_p + n_g)
