"""The one overlay renderer of samtune: an object in a crop around it, drawn into an RGB array.

Reports (best/worst galleries) and the training loggers (validation overlays) both draw with
:func:`render`, in the same colours: the prediction as a translucent blue fill, the ground
truth as a green outline, positive clicks as green ``+``, negative clicks as red ``x``, a box
prompt in yellow. :func:`crop_around` picks the crop: the ground-truth object and its prompts
with context around them, so a 5-pixel object fills the picture instead of vanishing in a
1000-pixel image (a prediction that spills over the whole image does not widen the crop).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from samtune.segmenter.sam2 import IMAGENET_MEAN, IMAGENET_STD

PRED_COLOR = np.array([31, 120, 242], dtype=np.float32)  # prediction: blue fill
GT_COLOR = np.array([0, 208, 96], dtype=np.float32)  # ground truth: green outline
POSITIVE_COLOR = np.array([0, 255, 0], dtype=np.float32)  # positive click: green +
NEGATIVE_COLOR = np.array([255, 40, 40], dtype=np.float32)  # negative click: red x
BOX_COLOR = np.array([255, 230, 0], dtype=np.float32)  # box prompt: yellow
LEGEND = "blue: prediction, green: ground truth, +/x: positive/negative click, yellow: box"


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalised ``3 x H x W`` model input back to ``H x W x 3`` uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def crop_around(
    gt: np.ndarray,
    *,
    points: np.ndarray | None = None,
    box: np.ndarray | None = None,
    context: float = 0.75,
    min_side: int = 16,
) -> tuple[int, int, int, int]:
    """Rows and columns ``(r0, r1, c0, c1)`` of a crop around an object and its prompts.

    Args:
        gt: ``H x W`` bool ground truth (its bounding box is the object).
        points: ``P x 2`` clicks ``(x, y)`` that must be inside the crop, or None.
        box: an XYXY box prompt that must be inside the crop, or None.
        context: margin on each side, as a fraction of the object's larger side.
        min_side: the crop is at least this many pixels wide and high (where the image is).

    Returns:
        Half-open bounds within the image; the whole image when there is no object.
    """
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    xs, ys = xs.astype(np.float64), ys.astype(np.float64)
    if points is not None and len(points):
        pts = np.asarray(points, np.float64).reshape(-1, 2)
        xs, ys = np.concatenate([xs, pts[:, 0]]), np.concatenate([ys, pts[:, 1]])
    if box is not None:
        b = np.asarray(box, np.float64).reshape(4)
        xs, ys = np.concatenate([xs, b[[0, 2]]]), np.concatenate([ys, b[[1, 3]]])
    if xs.size == 0:
        return 0, h, 0, w
    x0, x1 = np.clip([xs.min(), xs.max()], 0, w - 1)
    y0, y1 = np.clip([ys.min(), ys.max()], 0, h - 1)
    pad = context * max(x1 - x0 + 1, y1 - y0 + 1)
    half = max(min_side / 2, (x1 - x0 + 1) / 2 + pad), max(min_side / 2, (y1 - y0 + 1) / 2 + pad)
    cx, cy = (x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2
    c0, c1 = _span(cx, half[0], w)
    r0, r1 = _span(cy, half[1], h)
    return r0, r1, c0, c1


def _span(center: float, half: float, limit: int) -> tuple[int, int]:
    """``[center - half, center + half)`` in whole pixels, shifted to lie within ``[0, limit)``."""
    size = min(limit, int(np.ceil(2 * half)))
    start = int(np.floor(center - size / 2))
    start = min(max(start, 0), limit - size)
    return start, start + size


def _outline(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def render(
    image: np.ndarray,
    gt: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    *,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    display: int = 192,
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw an (already cropped) object: enlarged so its longer side is about ``display`` px.

    The crop is enlarged by a whole factor with nearest neighbour (pixels stay square and
    sharp); outlines, clicks and the box are drawn at the enlarged size, so they stay thin
    however small the object.

    Args:
        image: ``h x w x 3`` uint8 crop.
        gt: ``h x w`` bool ground truth, drawn as a green outline.
        pred: ``h x w`` bool prediction, drawn as a translucent blue fill.
        points: ``P x 2`` clicks ``(x, y)`` in crop pixels.
        labels: ``P`` click labels (1 positive, 0 negative); all positive when None.
        box: XYXY box prompt in crop pixels (inclusive pixel indices, as ``mask_to_box``).
        display: target of the longer side in pixels (the factor is at least 1).
        alpha: opacity of the prediction fill.

    Returns:
        ``(h * f) x (w * f) x 3`` uint8.
    """
    h, w = image.shape[:2]
    f = max(1, int(round(display / max(h, w, 1))))
    out = np.repeat(np.repeat(image.astype(np.float32), f, axis=0), f, axis=1)
    if pred is not None:
        p = np.repeat(np.repeat(pred.astype(bool), f, axis=0), f, axis=1)
        out[p] = (1 - alpha) * out[p] + alpha * PRED_COLOR
    if gt is not None:
        g = np.repeat(np.repeat(gt.astype(bool), f, axis=0), f, axis=1)
        edge = _outline(g)
        if f >= 4:  # two pixels wide once enlarged, so it reads at a glance
            edge |= _outline(g & ~edge)
        out[edge] = GT_COLOR
    if box is not None:  # XYXY pixel indices, inclusive (SAM 2's mask_to_box): outer edges
        x0, y0, x1, y1 = np.asarray(box, np.float64).reshape(4)
        _rectangle(out, np.array([x0 * f, y0 * f, (x1 + 1) * f - 1, (y1 + 1) * f - 1]), BOX_COLOR)
    if points is not None and len(points):
        labels = np.ones(len(points), int) if labels is None else np.asarray(labels)
        for (x, y), lab in zip(np.asarray(points, np.float64).reshape(-1, 2), labels):
            positive = int(lab) == 1
            color = POSITIVE_COLOR if positive else NEGATIVE_COLOR
            _marker(out, (x + 0.5) * f, (y + 0.5) * f, color, cross=not positive)
    return out.clip(0, 255).astype(np.uint8)


def _marker(out: np.ndarray, x: float, y: float, color: np.ndarray, *, cross: bool) -> None:
    """A ``+`` (or an ``x``) 9 px across, with a dark rim so it shows on any background."""
    h, w = out.shape[:2]
    cx, cy = int(round(x)), int(round(y))
    arm = np.arange(-4, 5)
    for shade, thick in ((np.zeros(3, np.float32), 1), (color, 0)):
        for d in range(-thick, thick + 1):
            if cross:
                coords = [(cy + arm, cx + arm + d), (cy + arm, cx - arm + d)]
            else:
                coords = [(cy + d + 0 * arm, cx + arm), (cy + arm, cx + d + 0 * arm)]
            for rows, cols in coords:
                ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
                out[rows[ok], cols[ok]] = shade


def _rectangle(out: np.ndarray, box: np.ndarray, color: np.ndarray) -> None:
    h, w = out.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(x0, w - 1)), max(0, min(x1, w - 1))
    y0, y1 = max(0, min(y0, h - 1)), max(0, min(y1, h - 1))
    out[y0, x0 : x1 + 1] = color
    out[y1, x0 : x1 + 1] = color
    out[y0 : y1 + 1, x0] = color
    out[y0 : y1 + 1, x1] = color


def object_overlays(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    points: np.ndarray | None = None,
    *,
    limit: int | None = None,
) -> list[np.ndarray]:
    """One rendered crop per object of an image (training loggers' validation overlays).

    Args:
        image: ``H x W x 3`` uint8.
        gt: ``N x H x W`` bool ground truth.
        pred: ``N x H x W`` bool predictions.
        points: ``N x P x 2`` clicks ``(x, y)`` (positive), or None.
        limit: at most this many objects.
    """
    pictures = []
    for i in range(len(gt) if limit is None else min(limit, len(gt))):
        pts = None if points is None else np.asarray(points[i], np.float64).reshape(-1, 2)
        r0, r1, c0, c1 = crop_around(gt[i], points=pts)
        offset = np.array([c0, r0], np.float64)
        pictures.append(
            render(
                image[r0:r1, c0:c1],
                gt[i, r0:r1, c0:c1],
                pred[i, r0:r1, c0:c1],
                points=None if pts is None else pts - offset,
            )
        )
    return pictures


def short_name(file: str | Path, width: int = 18) -> str:
    """A file's name cut to ``width`` characters by an ellipsis in the middle (long hashes)."""
    name = Path(str(file)).name
    if len(name) <= width:
        return name
    keep = width - 1
    return f"{name[: (keep + 1) // 2]}…{name[len(name) - keep // 2 :]}"
