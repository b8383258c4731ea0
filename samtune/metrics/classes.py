"""torchmetrics ``Metric`` classes over :mod:`samtune.metrics.functional`.

Every state is a sum or a count reduced with ``dist_reduce_fx="sum"``, so the metrics are
exact under DDP: the mean over all processes equals the mean over all objects.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from samtune.metrics.functional import mask_dice, mask_iou, number_of_clicks


class _MeanOverObjects(Metric):
    """Mean of a per-object value; subclasses define :meth:`_values`."""

    full_state_update = False
    higher_is_better: bool | None = True
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _values(self, *args: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, *args: torch.Tensor) -> None:
        """Add the objects of one batch."""
        values = self._values(*args)
        self.total += values.sum().to(self.total)
        self.count += values.numel()

    def compute(self) -> torch.Tensor:
        """Mean over every object seen (NaN before any update)."""
        if self.count == 0:
            return torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
        return self.total / self.count


class MeanIoU(_MeanOverObjects):
    """Mean IoU over objects; ``update(pred, gt)`` with ``N x H x W`` masks.

    Both masks empty counts as IoU 1.0 (see :func:`samtune.metrics.functional.mask_iou`).
    """

    def _values(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return mask_iou(pred, gt)


class MeanDice(_MeanOverObjects):
    """Mean Dice over objects; ``update(pred, gt)`` with ``N x H x W`` masks.

    Both masks empty counts as Dice 1.0 (see :func:`samtune.metrics.functional.mask_dice`).
    """

    def _values(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return mask_dice(pred, gt)


def _check_clicks(iou_per_click: torch.Tensor, max_clicks: int) -> torch.Tensor:
    if iou_per_click.ndim != 2 or iou_per_click.shape[1] < max_clicks:
        raise ValueError(
            f"iou_per_click must be N x K with K >= max_clicks={max_clicks}, "
            f"got shape {tuple(iou_per_click.shape)}"
        )
    return iou_per_click[:, :max_clicks]


class NoC(_MeanOverObjects):
    """Mean number of clicks to reach ``threshold`` IoU, capped at ``max_clicks``.

    ``update(iou_per_click)`` takes ``N x K`` IoUs after click 1..K (K >= ``max_clicks``; only
    the first ``max_clicks`` columns are used). An object that never reaches the threshold
    counts ``max_clicks`` clicks; :attr:`failures` counts those objects (NoF).

    Args:
        threshold: target IoU, e.g. 0.85 or 0.90.
        max_clicks: click budget per object.
    """

    higher_is_better = False

    def __init__(self, threshold: float, max_clicks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
        self.threshold = float(threshold)
        self.max_clicks = int(max_clicks)
        self.add_state("failures", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def _values(self, iou_per_click: torch.Tensor) -> torch.Tensor:
        ious = _check_clicks(iou_per_click, self.max_clicks)
        self.failures += (~(ious >= self.threshold).any(dim=1)).sum().to(self.failures)
        return number_of_clicks(ious, self.threshold)


class IoUPerClick(Metric):
    """Mean IoU after each of click 1..``max_clicks`` (the mIoU-vs-clicks curve).

    ``update(iou_per_click)`` takes ``N x K`` (K >= ``max_clicks``); ``compute()`` returns a
    ``max_clicks`` vector.

    Args:
        max_clicks: number of clicks on the curve.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, max_clicks: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if max_clicks < 1:
            raise ValueError(f"max_clicks must be >= 1, got {max_clicks}")
        self.max_clicks = int(max_clicks)
        self.add_state(
            "total", default=torch.zeros(self.max_clicks, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, iou_per_click: torch.Tensor) -> None:
        """Add the objects of one batch."""
        ious = _check_clicks(iou_per_click, self.max_clicks)
        self.total += ious.sum(dim=0).to(self.total)
        self.count += ious.shape[0]

    def compute(self) -> torch.Tensor:
        """Mean IoU per click over every object seen (NaN before any update)."""
        if self.count == 0:
            return torch.full_like(self.total, float("nan"))
        return self.total / self.count
