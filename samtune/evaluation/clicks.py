"""Deterministic prompts of the evaluation protocols, computed from ground-truth masks.

* :func:`center_points` — the ``point1`` click: the deepest point of each object.
* the ``box`` prompt is the object's tight box, :func:`samtune.prompts.mask_to_box`, the
  same rule that the training prompts start from.
* :func:`error_center_clicks` — the correction click of the ``clicks`` protocol: the center of
  the largest error region (the RITM rule that SAM 2 also uses).

"Deepest" means the largest exact Euclidean distance to the nearest pixel outside the region,
where the image border counts as outside (the region is padded by one background pixel),
compared as whole squared distances (so equal distances are ties, whatever OpenCV's rounding).
Ties go to the first pixel in row-major order. All coordinates are ``(x, y)`` pixel indices of
the masks' own resolution.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch


def _deepest(region: np.ndarray) -> tuple[float, int, int]:
    """Distance, row and column of the deepest pixel of a 2-D bool ``region`` (0, 0, 0 if empty).

    The distance transform runs on the region's bounding box padded by one background pixel;
    this is exact, because a background pixel outside that box is never nearer than the box's
    own padded border, and it keeps the cost proportional to the region, not the image.
    """
    rows = np.flatnonzero(region.any(axis=1))
    if rows.size == 0:
        return 0.0, 0, 0
    cols = np.flatnonzero(region.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.pad(region[r0:r1, c0:c1].astype(np.uint8), 1)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    # OpenCV's float32 result of the exact transform differs in the last bit from call to call
    # (its vectorised paths depend on buffer alignment), which would break ties at random; the
    # squared distance is a whole number, so rounding it gives the exact value to compare.
    squared = np.rint(dist.astype(np.float64) ** 2).astype(np.int64)
    flat = int(np.argmax(squared))  # the first maximum in row-major order
    r, c = divmod(flat, squared.shape[1])
    return float(np.sqrt(squared[r, c])), int(r0 + r), int(c0 + c)


def _as_numpy_masks(masks: torch.Tensor, what: str) -> np.ndarray:
    if masks.ndim != 3:
        raise ValueError(f"{what} must be N x H x W, got shape {tuple(masks.shape)}")
    return masks.detach().bool().cpu().numpy()


def center_points(masks: torch.Tensor) -> torch.Tensor:
    """The ``point1`` click of each mask: its deepest point by distance transform.

    Args:
        masks: ``N x H x W`` bool.

    Returns:
        ``N x 2`` float32 ``(x, y)`` on the masks' device.

    Raises:
        ValueError: when a mask is empty (naming its index).
    """
    arr = _as_numpy_masks(masks, "masks")
    points = np.zeros((arr.shape[0], 2), dtype=np.float32)
    for i, mask in enumerate(arr):
        dist, r, c = _deepest(mask)
        if dist == 0.0:
            raise ValueError(f"mask {i} is empty: a center point needs at least one pixel")
        points[i] = (c, r)
    return torch.from_numpy(points).to(masks.device)


def error_center_clicks(
    pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next correction click of each object: the center of its largest error region.

    The click goes to the deepest pixel of the false-negative area (``gt & ~pred``, label 1)
    or of the false-positive area (``pred & ~gt``, label 0), whichever pixel is deeper; on a
    tie the click is negative, as in SAM 2's ``sample_one_point_from_error_center``.

    A perfect prediction has no error to correct; the click is then a negative click at the
    deepest background point (a harmless confirmation of the background; SAM 2's training
    code would put it at pixel (0, 0)). When the object fills the whole image, there is no
    background either, and the click is a positive one at the object's center.

    Args:
        pred: ``N x H x W`` bool, the current prediction at the ground truth's resolution.
        gt: ``N x H x W`` bool ground truth.
        ignore: ``H x W`` bool pixels not labelled in the dataset, or None: neither error
            region nor the background of a perfect prediction includes them.

    Returns:
        ``(points, labels)``: ``N x 1 x 2`` float32 ``(x, y)`` and ``N x 1`` int32, on the
        device of ``gt``.
    """
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape"
        )
    p, g = _as_numpy_masks(pred, "pred"), _as_numpy_masks(gt, "gt")
    if ignore is not None:
        counted = ~ignore.detach().bool().cpu().numpy()
        if counted.shape != g.shape[1:]:
            raise ValueError(
                f"ignore {tuple(counted.shape)} is not the masks' size {tuple(g.shape[1:])}"
            )
        p, g = p & counted, g & counted
    else:
        counted = np.ones(g.shape[1:], dtype=bool)
    points = np.zeros((g.shape[0], 1, 2), dtype=np.float32)
    labels = np.zeros((g.shape[0], 1), dtype=np.int32)
    for i in range(g.shape[0]):
        fn_d, fn_r, fn_c = _deepest(g[i] & ~p[i])
        fp_d, fp_r, fp_c = _deepest(p[i] & ~g[i])
        if fn_d == 0.0 and fp_d == 0.0:  # perfect prediction
            bg_d, r, c = _deepest(~g[i] & counted)
            label = 0
            if bg_d == 0.0:
                _, r, c = _deepest(g[i])
                label = 1
        elif fn_d > fp_d:
            r, c, label = fn_r, fn_c, 1
        else:
            r, c, label = fp_r, fp_c, 0
        points[i, 0] = (c, r)
        labels[i, 0] = label
    return torch.from_numpy(points).to(gt.device), torch.from_numpy(labels).to(gt.device)
