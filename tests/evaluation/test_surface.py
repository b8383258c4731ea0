"""NSD against hand-counted cubes and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.evaluation.surface import normalized_surface_distance, surface_voxels


def cube(start: tuple[int, int, int], side: int = 3, shape=(8, 8, 10)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    z, y, x = start
    mask[z : z + side, y : y + side, x : x + side] = True
    return mask


def test_surface_of_a_cube_by_hand():
    assert surface_voxels(cube((2, 2, 2))).sum() == 27 - 1  # 3^3, only the centre is inside
    assert surface_voxels(cube((2, 2, 2), side=4)).sum() == 64 - 8
    assert surface_voxels(cube((0, 0, 0), side=8, shape=(8, 8, 8))).sum() == 512 - 216


def test_nsd_by_hand():
    gt, shifted = cube((2, 2, 2)), cube((2, 2, 3))
    assert normalized_surface_distance(gt, gt, (1, 1, 1), 0) == 1.0
    # shifted one voxel along x: every surface voxel is within 1 mm of the other surface
    assert normalized_surface_distance(shifted, gt, (1, 1, 1), 1.0) == 1.0
    # with x spacing 2 mm the shift is 2 mm: a 1 mm tolerance no longer covers the end faces
    far = normalized_surface_distance(shifted, gt, (1, 1, 2), 1.0)
    assert far == pytest.approx(brute_nsd(shifted, gt, (1, 1, 2), 1.0))
    assert far < 1.0
    empty = np.zeros_like(gt)
    assert np.isnan(normalized_surface_distance(empty, empty, (1, 1, 1), 1))
    assert normalized_surface_distance(empty, gt, (1, 1, 1), 1) == 0.0
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_distance(gt, gt, (1, 1), 1)


def test_nsd_two_apart_cubes_by_hand():
    a, b = cube((2, 2, 0)), cube((2, 2, 6))  # gap of 3 voxels between x = 2 and x = 6
    assert normalized_surface_distance(a, b, (1, 1, 1), 3.9) == 0.0
    # at 4 mm the facing faces (9 voxels each) match: 18 of 26 + 26
    assert normalized_surface_distance(a, b, (1, 1, 1), 4.0) == pytest.approx(18 / 52)


def brute_nsd(pred, gt, spacing, tol):
    sp = np.argwhere(surface_voxels(pred)) * np.asarray(spacing)
    sg = np.argwhere(surface_voxels(gt)) * np.asarray(spacing)
    d = np.sqrt(((sp[:, None] - sg[None]) ** 2).sum(-1))
    return ((d.min(1) <= tol).sum() + (d.min(0) <= tol).sum()) / (len(sp) + len(sg))


@pytest.mark.parametrize("seed", range(4))
def test_nsd_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:10, :12, :12]
    masks = []
    for _ in range(2):
        c, r = rng.integers(3, 9, size=3), rng.integers(2, 5)
        masks.append((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r)
    spacing = (2.5, 0.8, 0.8)
    for tol in (0.0, 1.0, 2.0, 3.0):
        assert normalized_surface_distance(*masks, spacing, tol) == pytest.approx(
            brute_nsd(*masks, spacing, tol)
        )
