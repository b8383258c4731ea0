"""Segmentation metrics: a functional core and torchmetrics classes over it."""

from samtune.metrics.classes import IoUPerClick, MeanDice, MeanIoU, NoC
from samtune.metrics.functional import mask_dice, mask_iou, number_of_clicks

__all__ = ["IoUPerClick", "MeanDice", "MeanIoU", "NoC", "mask_dice", "mask_iou", "number_of_clicks"]
