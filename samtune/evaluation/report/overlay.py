"""Overlays of ground truth and predicted masks on images, for reports and loggers."""

from __future__ import annotations

import numpy as np
import torch

from samtune.segmenter.sam2 import IMAGENET_MEAN, IMAGENET_STD

GT_COLOR = np.array([0, 255, 0], dtype=np.float32)
PRED_COLOR = np.array([255, 0, 255], dtype=np.float32)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalised ``3 x H x W`` model input back to ``H x W x 3`` uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _edges(mask: np.ndarray) -> np.ndarray:
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(
    image: np.ndarray,
    gt: np.ndarray | None = None,
    pred: np.ndarray | None = None,
    *,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    alpha: float = 0.45,
) -> np.ndarray:
    """Draw ``pred`` (magenta fill) and ``gt`` (green outline) and clicks on an ``H x W x 3`` uint8 image.

    Args:
        image: the picture.
        gt: ``H x W`` bool ground truth, drawn as a green outline.
        pred: ``H x W`` bool prediction, drawn as a translucent magenta fill.
        points: ``P x 2`` (x, y) clicks; positive ones green, negative ones red.
        labels: ``P`` click labels (1 positive, 0 negative).
        alpha: opacity of the prediction fill.
    """
    out = image.astype(np.float32).copy()
    if pred is not None:
        p = pred.astype(bool)
        out[p] = (1 - alpha) * out[p] + alpha * PRED_COLOR
    if gt is not None:
        out[_edges(gt)] = GT_COLOR
    if points is not None:
        h, w = image.shape[:2]
        labels = np.ones(len(points), dtype=int) if labels is None else np.asarray(labels)
        for (x, y), lab in zip(np.asarray(points), labels):
            color = np.array([0, 255, 0] if lab == 1 else [255, 0, 0], dtype=np.float32)
            x0, y0 = int(round(x)), int(round(y))
            out[max(0, y0 - 1) : min(h, y0 + 2), max(0, x0 - 1) : min(w, x0 + 2)] = color
    return out.clip(0, 255).astype(np.uint8)
