"""Per-object segmentation metrics on boolean masks: IoU, Dice and the number of clicks (NoC).

Conventions, chosen so that every object contributes a finite number:

* ``mask_iou`` and ``mask_dice`` give 1.0 when prediction and ground truth are both empty
  (nothing to find, nothing found), and 0.0 when exactly one of them is empty.
* Pixels marked ignored (``ignore``: not labelled in the dataset) are left out of both the
  prediction and the ground truth before counting: a prediction that differs from the ground
  truth only there scores 1.0.
* ``number_of_clicks`` counts clicks from 1 and gives ``K`` (the number of clicks simulated)
  for an object that never reaches the threshold, as in the RITM / SAM 2 interactive
  benchmarks. The threshold is reached when ``iou >= threshold``.

Counted here, not with torchmetrics' ``binary_stat_scores(multidim_average="samplewise")``: its
counts give the same IoU except NaN for an empty pair, about 30x slower on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch


def _flat_pair(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction and ground truth must have the same shape, got {tuple(pred.shape)} "
            f"and {tuple(gt.shape)}"
        )
    if pred.ndim < 2:
        raise ValueError(f"masks must be N x H x W (or H x W), got shape {tuple(pred.shape)}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    return pred.reshape(pred.shape[0], -1).bool(), gt.reshape(gt.shape[0], -1).bool()


def _flat_ignore(ignore: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``ignore`` (``H x W`` shared by every mask, or one per mask) as ``N x P`` or ``1 x P``."""
    size = tuple(shape[-2:])
    if tuple(ignore.shape[-2:]) != size or ignore.ndim not in (2, len(shape)):
        raise ValueError(
            f"ignore must be H x W or N x H x W like the masks {tuple(shape)}, got "
            f"{tuple(ignore.shape)}"
        )
    if ignore.ndim == 2:
        return ignore.reshape(1, -1).bool()
    return ignore.reshape(ignore.shape[0], -1).bool()


def _intersection_and_sizes(
    pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    p, g = _flat_pair(pred, gt)
    if ignore is not None:
        counted = ~_flat_ignore(ignore.to(p.device), pred.shape)
        p, g = p & counted, g & counted
    inter, p_size, g_size = (_count_rows(x) for x in (p & g, p, g))
    return inter, p_size, g_size


def _count_rows(x: torch.Tensor) -> torch.Tensor:
    """True pixels per row of an ``N x P`` bool tensor, as float64 (exact up to 2**53)."""
    if x.device.type == "cpu":  # numpy's popcount is several times faster than torch's on CPU
        counts = torch.from_numpy(np.count_nonzero(x.numpy(), axis=1))
    else:
        counts = x.count_nonzero(dim=1)
        if counts.device.type == "mps":  # Apple GPUs have no float64 (validation may run there)
            counts = counts.cpu()
    return counts.to(torch.float64)


def mask_iou(
    pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """Intersection over union of each predicted mask with its ground truth.

    Args:
        pred: ``N x H x W`` (or ``H x W``) masks; any dtype, non-zero means inside.
        gt: ground-truth masks of the same shape.
        ignore: pixels counted in neither mask (``H x W`` for all masks, or ``N x H x W``),
            or None.

    Returns:
        ``N`` float64 IoUs; 1.0 where both masks are empty.
    """
    inter, p, g = _intersection_and_sizes(pred, gt, ignore)
    union = p + g - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_dice(
    pred: torch.Tensor, gt: torch.Tensor, ignore: torch.Tensor | None = None
) -> torch.Tensor:
    """Dice coefficient ``2|P∩G| / (|P| + |G|)`` of each predicted mask with its ground truth.

    Args:
        pred: ``N x H x W`` (or ``H x W``) masks; any dtype, non-zero means inside.
        gt: ground-truth masks of the same shape.
        ignore: pixels counted in neither mask (``H x W`` for all masks, or ``N x H x W``),
            or None.

    Returns:
        ``N`` float64 Dice values; 1.0 where both masks are empty.
    """
    inter, p, g = _intersection_and_sizes(pred, gt, ignore)
    total = p + g
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def number_of_clicks(iou_per_click: torch.Tensor, threshold: float) -> torch.Tensor:
    """Clicks needed to reach ``threshold`` IoU (NoC), per object.

    Args:
        iou_per_click: ``N x K``, the IoU after click 1..K of each object.
        threshold: target IoU, e.g. 0.85 or 0.90; reached when ``iou >= threshold``.

    Returns:
        ``N`` int64: the 1-based index of the first click whose IoU reaches ``threshold``,
        or ``K`` when no click does (the RITM / SAM 2 convention).
    """
    if iou_per_click.ndim != 2 or iou_per_click.shape[1] == 0:
        raise ValueError(
            f"iou_per_click must be N x K with K >= 1, got shape {tuple(iou_per_click.shape)}"
        )
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"NoC threshold must be in (0, 1], got {threshold}")
    k = iou_per_click.shape[1]
    reached = iou_per_click >= threshold
    first = reached.to(torch.int64).argmax(dim=1) + 1  # argmax returns the first maximum
    return torch.where(reached.any(dim=1), first, torch.full_like(first, k))
