"""Protocol prompts: center points, tight boxes and error-center correction clicks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from samtune.evaluation.clicks import center_points, error_center_clicks
from samtune.prompts import mask_to_box


def _deepest_reference(region: np.ndarray) -> tuple[float, int, int]:
    """Exact EDT with scipy on the whole padded image; first maximum in row-major order."""
    dist = distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    r, c = divmod(int(np.argmax(dist)), dist.shape[1])
    return float(dist[r, c]), r, c


def _random_blobs(n: int, h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(1, 4)):  # unions of ellipses, some touching the border
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(2, h / 3), rng.uniform(2, w / 3)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def test_center_point_of_a_rectangle_is_its_center():
    masks = torch.zeros(2, 30, 40, dtype=torch.bool)
    masks[0, 5:16, 10:21] = True  # 11 x 11 square: center (x=15, y=10)
    masks[1, 20:29, 3:12] = True  # 9 x 9 square: center (x=7, y=24)
    pts = center_points(masks)
    assert pts.dtype == torch.float32 and pts.shape == (2, 2)
    assert pts.tolist() == [[15.0, 10.0], [7.0, 24.0]]


def test_center_point_ties_go_to_the_first_pixel_in_row_major_order():
    masks = torch.zeros(1, 30, 40, dtype=torch.bool)
    masks[0, 10:21, 5:36] = True  # 11 rows, 31 cols: the middle row's x in 10..30 tie at distance 6
    assert center_points(masks).tolist() == [[10.0, 15.0]]


def test_image_border_counts_as_boundary():
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, :, :9] = True  # touches the left, top and bottom borders
    # with the border as boundary the deepest column is 4 (distance 5 to x=-1 and to x=9)
    x, y = center_points(masks)[0].tolist()
    assert x == 4.0 and y == 4.0  # rows 4..15 tie at distance 5: first is row 4


def test_center_points_match_scipy_on_random_shapes():
    masks = _random_blobs(12)
    pts = center_points(torch.from_numpy(masks))
    for m, (x, y) in zip(masks, pts.tolist(), strict=True):
        _, r, c = _deepest_reference(m)
        assert (x, y) == (c, r)


def test_empty_mask_raises():
    masks = torch.zeros(3, 8, 8, dtype=torch.bool)
    masks[0, 2, 2] = masks[2, 3, 3] = True
    with pytest.raises(ValueError, match="mask 1 is empty"):
        center_points(masks)
    with pytest.raises(ValueError, match="mask 1 is empty"):
        mask_to_box(masks)


def test_box_prompt_follows_sam2_mask_to_box():
    from sam2.utils.misc import mask_to_box as sam2_mask_to_box

    masks = torch.from_numpy(_random_blobs(10, seed=1))
    ours = mask_to_box(masks)
    ref = sam2_mask_to_box(masks[:, None])[:, 0].float()
    assert torch.equal(ours, ref)
    one = torch.zeros(1, 10, 12, dtype=torch.bool)
    one[0, 2:5, 7:11] = True
    assert mask_to_box(one).tolist() == [[7.0, 2.0, 10.0, 4.0]]


def _square(mask: torch.Tensor, y0: int, x0: int, size: int) -> None:
    mask[y0 : y0 + size, x0 : x0 + size] = True


def test_correction_click_goes_to_the_larger_false_negative_region():
    gt = torch.zeros(1, 64, 64, dtype=torch.bool)
    pred = torch.zeros_like(gt)
    _square(gt[0], 8, 8, 40)
    _square(pred[0], 8, 8, 40)
    pred[0, 8:48, 28:48] = False  # big FN: a 40 x 20 strip of the object is missed
    _square(pred[0], 54, 54, 5)  # small FP blob outside the object
    points, labels = error_center_clicks(pred, gt)
    assert points.shape == (1, 1, 2) and points.dtype == torch.float32
    assert labels.shape == (1, 1) and labels.dtype == torch.int32
    x, y = (int(v) for v in points[0, 0].tolist())
    assert labels.item() == 1
    assert gt[0, y, x] and not pred[0, y, x]  # inside the FN region
    assert (x, y) == (37, 17)  # 40 x 20 strip x 28..47: deepest column 37, first tied row 17


def test_correction_click_goes_to_the_larger_false_positive_region():
    gt = torch.zeros(1, 64, 64, dtype=torch.bool)
    _square(gt[0], 4, 4, 20)
    pred = gt.clone()
    pred[0, 4:8, 4:8] = False  # small FN
    _square(pred[0], 30, 30, 25)  # big FP: a 25 x 25 square off the object, center (42, 42)
    points, labels = error_center_clicks(pred, gt)
    assert labels.item() == 0
    assert points[0, 0].tolist() == [42.0, 42.0]


def test_correction_clicks_match_sam2_rule_on_random_errors():
    from sam2.modeling.sam2_utils import sample_one_point_from_error_center

    gt = torch.from_numpy(_random_blobs(10, seed=2))
    pred = torch.from_numpy(_random_blobs(10, seed=3))
    ours_p, ours_l = error_center_clicks(pred, gt)
    ref_p, ref_l = sample_one_point_from_error_center(gt[:, None], pred[:, None])
    assert torch.equal(ours_l, ref_l)
    assert torch.equal(ours_p, ref_p)


def test_perfect_prediction_gets_a_negative_click_at_the_deepest_background():
    gt = torch.from_numpy(_random_blobs(4, seed=4))
    points, labels = error_center_clicks(gt.clone(), gt)
    assert labels.flatten().tolist() == [0, 0, 0, 0]
    for m, (x, y) in zip(gt.numpy(), points[:, 0].tolist(), strict=True):
        _, r, c = _deepest_reference(~m)
        assert (x, y) == (c, r) and not m[r, c]
    full = torch.ones(
        1, 9, 9, dtype=torch.bool
    )  # nothing but object: a positive click at its center
    points, labels = error_center_clicks(full.clone(), full)
    assert labels.item() == 1 and points[0, 0].tolist() == [4.0, 4.0]


def test_deepest_point_is_the_first_of_equal_exact_distances():
    """Held to scipy's exact transform on random regions: the deepest pixel is the first in
    row-major order of the largest squared distance, the same on every call."""
    from scipy import ndimage

    from samtune.evaluation.clicks import _deepest

    rng = np.random.default_rng(0)
    for trial in range(40):
        region = ndimage.binary_opening(rng.random((40, 56)) < 0.7, iterations=1)
        if not region.any():
            continue
        squared = np.rint(ndimage.distance_transform_edt(np.pad(region, 1)) ** 2)[1:-1, 1:-1]
        r, c = divmod(int(np.argmax(squared)), squared.shape[1])
        found = {_deepest(region) for _ in range(5)}
        assert found == {(float(np.sqrt(squared[r, c])), r, c)}, trial
