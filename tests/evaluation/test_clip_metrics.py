"""Region J, boundary F and their means against hand-computed values and a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.clip import Clip
from samtune.evaluation.clips import (
    ObjectTrack,
    boundary_f,
    boundary_map,
    boundary_tolerance,
    prompt_groups,
    region_j,
    score_clip,
    summarize_clips,
)


def square(top: int, left: int, side: int = 4, shape: tuple[int, int] = (10, 10)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_region_j_by_hand():
    gt = square(2, 2)
    pred = square(2, 3)  # shifted one column: 12 shared pixels of a 20-pixel union
    assert region_j(pred, gt) == pytest.approx(12 / 20)
    assert region_j(gt, gt) == 1.0
    empty = np.zeros((10, 10), bool)
    assert region_j(empty, empty) == 1.0
    assert region_j(empty, gt) == 0.0
    with pytest.raises(ValueError, match="one size"):
        region_j(gt, gt[:5])


def test_boundary_map_is_the_ring_and_not_the_image_border():
    ring = boundary_map(square(2, 2))
    assert ring.sum() == 12  # a 4 x 4 square: 16 pixels, 4 inside
    assert not ring[3:5, 3:5].any()
    full = np.ones((6, 6), bool)
    assert not boundary_map(full).any()
    corner = square(0, 0, side=3, shape=(6, 6))
    assert boundary_map(corner).sum() == 5  # only the row 2 and column 2 edges face background


def test_boundary_f_by_hand():
    gt, pred = square(2, 2), square(2, 3)
    # exact matching: rows 2 and 5 share columns 3..5, 6 of each ring's 12 pixels
    assert boundary_f(pred, gt, tolerance=0) == pytest.approx(0.5)
    # within one pixel every boundary pixel of either square finds one of the other
    assert boundary_f(pred, gt, tolerance=1) == pytest.approx(1.0)
    wide = (10, 12)  # room for a square four columns to the right, off the image border
    near, far = square(2, 2, shape=wide), square(2, 6, shape=wide)
    # within 1 px: far's column 6 and near's column 5 (4 pixels each), nothing else
    p = r = 4 / 12
    assert boundary_f(far, near, tolerance=1) == pytest.approx(2 * p * r / (p + r))
    assert boundary_f(far, near, tolerance=0) == 0.0
    empty = np.zeros((10, 10), bool)
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(empty, gt) == 0.0
    assert boundary_f(gt, empty) == 0.0
    assert boundary_f(square(0, 0, 2), square(7, 7, 2), tolerance=1) == 0.0


def test_boundary_tolerance_follows_the_diagonal():
    assert boundary_tolerance((480, 854)) == 8  # DAVIS 480p: 0.008 * 979.7 = 7.84
    assert boundary_tolerance((1080, 1920)) == 18  # 17.6
    assert boundary_tolerance((48, 64)) == 1  # 0.64, at least one pixel
    assert boundary_tolerance((300, 400)) == 4  # 0.008 * 500 = 4.0


def brute_force_f(pred: np.ndarray, gt: np.ndarray, tol: float) -> float:
    """F from every pair of boundary pixels, with the boundary found by a plain loop."""

    def ring(mask):
        h, w = mask.shape
        out = np.zeros_like(mask)
        for y in range(h):
            for x in range(w):
                if not mask[y, x]:
                    continue
                for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and not mask[yy, xx]:
                        out[y, x] = True
        return out

    pb, gb = np.argwhere(ring(pred)), np.argwhere(ring(gt))
    if len(pb) == 0 and len(gb) == 0:
        return 1.0
    if len(pb) == 0 or len(gb) == 0:
        return 0.0
    dist = np.sqrt(((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1))
    precision = float((dist.min(1) <= tol).mean())
    recall = float((dist.min(0) <= tol).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(6))
def test_boundary_f_equals_a_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:24, :30]
    blobs = []
    for _ in range(2):
        cy, cx, r = rng.integers(4, 20), rng.integers(4, 26), rng.integers(2, 8)
        blobs.append((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
    pred, gt = blobs
    pred |= rng.random(pred.shape) < 0.03  # specks: many short boundaries
    for tol in (0, 1, 2, 3):
        assert boundary_f(pred, gt, tolerance=tol) == pytest.approx(brute_force_f(pred, gt, tol))


def make_clip() -> Clip:
    """4 frames of 10 x 10; object 1 on every frame, object 2 from frame 1, frame 2 not annotated."""
    labels = np.zeros((4, 10, 10), np.int64)
    for t in range(4):
        labels[t][square(2, 2)] = 1
        if t >= 1:
            labels[t][square(6, 6, 3)] = 2
    labels[2] = 0
    frames = np.zeros((4, 10, 10, 3), np.uint8)
    return Clip.from_label_maps(
        frames, labels, [1, 2], annotated=[True, True, False, True], meta={"file": "v"}
    )


def test_prompt_groups_and_scored_frames():
    clip = make_clip()
    assert prompt_groups(clip) == {0: [0], 1: [1]}
    gt1, gt2 = clip.masks[0], clip.masks[1]
    shifted = square(2, 3)
    predictions = {
        0: (0, {1: gt1[1], 2: gt1[2], 3: shifted}),  # frame 2 is not annotated: not scored
        1: (1, {2: np.zeros((10, 10), bool), 3: gt2[3]}),
    }
    tracks = score_clip(clip, predictions)
    assert [t.frames for t in tracks] == [[1, 3], [3]]
    assert tracks[0].j == pytest.approx([1.0, 12 / 20])
    assert tracks[0].f == pytest.approx([1.0, 1.0])  # 10 x 10: tolerance 1 px
    assert tracks[1].j == [1.0] and tracks[1].object_id == 2


def test_means_over_objects_then_videos():
    a = ObjectTrack(1, 0, [1, 2], [1.0, 0.5], [1.0, 0.0])  # J 0.75, F 0.5
    b = ObjectTrack(2, 0, [1], [0.25], [0.5])  # J 0.25, F 0.5
    c = ObjectTrack(1, 0, [1], [0.0], [0.0])
    summary = summarize_clips({"v1": [a, b], "v2": [c], "empty": []})
    v1 = summary["per_video"]["v1"]
    assert v1["J"] == pytest.approx(0.5) and v1["F"] == pytest.approx(0.5)
    assert summary["J"] == pytest.approx((0.5 + 0.0) / 2)  # videos weigh the same
    assert summary["F"] == pytest.approx(0.25)
    assert summary["JF"] == pytest.approx(0.25)
    assert summary["n_videos"] == 2 and summary["n_objects"] == 3
    assert v1["objects"]["1"]["JF"] == pytest.approx(0.625)
