"""SAM 2's training loss for one prediction step of N objects.

Terms, per object and per predicted mask (M = 1 or 3 masks per object):

* **focal**: ``torchvision.ops.sigmoid_focal_loss`` (``alpha``, ``gamma``), averaged over the
  pixels.
* **dice**: soft Dice on the sigmoid, smoothed with 1 in numerator and denominator,
  ``1 - (2 * sum(p * t) + 1) / (sum(p) + sum(t) + 1)``, sums over the pixels. SAM 2 writes the
  numerator as ``sum(p) + sum(t) - |p - t|_1``, which is the same number for a 0/1 target.
* **iou**: L1 (or MSE) between the predicted IoU and the actual IoU of the thresholded mask
  (logits > 0) with the target, ``|pred & t| / max(|pred | t|, 1)``, averaged over all M masks.
* **object_score**: binary cross-entropy with logits of the object score against "the target
  is not empty".

Focal and dice are taken from the mask with the lowest ``focal_weight * focal + dice_weight *
dice`` only, so gradients reach that mask alone; the IoU term sees all masks. With
``supervise_object_score`` an object whose target is empty contributes no focal, dice or IoU
loss (it only teaches the object score), as in SAM 2. Every term is then summed over the
objects and divided by N, the number of objects including the empty ones (SAM 2 divides by
the number of objects in the batch the same way).

Pixels marked ignored (``ignore``: not labelled in the dataset) count in no term: focal is
averaged over the other pixels, dice and the actual IoU sum over the other pixels only, so a
prediction there changes neither the loss nor its gradient.

For interactive training, call the loss once per prediction step and add the results, as SAM 2
does; the logits must be at the target's resolution (upsample the decoder's low-res logits
first).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from samtune.validation import check_number


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, counted: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-mask soft Dice loss on the sigmoid with +1 smoothing.

    Hand-written: torchvision has no Dice loss, and torchmetrics' Dice (like
    ``samtune.metrics.functional.mask_dice``) scores thresholded masks, with no gradient.

    Args:
        logits: ``N x M x H x W`` mask logits.
        target: ``N x M x H x W`` float 0/1 target (broadcastable).
        counted: ``N x 1 x H x W`` bool, the pixels that count (broadcastable); None: all.

    Returns:
        ``N x M`` losses in ``[0, 1)``.
    """
    prob = torch.sigmoid(logits)
    if counted is not None:
        prob = prob * counted
    prob = prob.flatten(2)
    target = target.expand_as(logits).flatten(2)
    intersection = (prob * target).sum(dim=-1)
    total = prob.sum(dim=-1) + target.sum(dim=-1)
    return 1 - (2 * intersection + 1) / (total + 1)


def mask_iou(
    logits: torch.Tensor, target: torch.Tensor, counted: torch.Tensor | None = None
) -> torch.Tensor:
    """IoU of each thresholded mask (logits > 0) with the target, 0 where both are empty.

    Not ``samtune.metrics.functional.mask_iou``: SAM 2's training target counts an empty pair as
    0 (the metric counts it as 1) and stays float32 on the logits' device.

    Args:
        logits: ``N x M x H x W`` mask logits.
        target: ``N x M x H x W`` bool target (broadcastable).
        counted: ``N x 1 x H x W`` bool, the pixels that count (broadcastable); None: all.

    Returns:
        ``N x M`` float IoUs, without gradient.
    """
    pred = logits > 0
    if counted is not None:
        pred = pred & counted
    pred = pred.flatten(2)
    target = target.expand_as(logits).flatten(2)
    inter = (pred & target).sum(dim=-1).float()
    union = (pred | target).sum(dim=-1).float()
    return inter / union.clamp(min=1.0)


class SAM2Loss(torch.nn.Module):
    """SAM 2's loss: focal + dice on the best of the masks, IoU prediction on all, object score.

    See the module docstring for the exact formulas and the reduction.

    Args:
        focal_weight: weight of the focal term in ``loss`` and in the choice of the best mask.
        dice_weight: weight of the dice term in ``loss`` and in the choice of the best mask.
        iou_weight: weight of the IoU-prediction term.
        object_score_weight: weight of the object-score term.
        focal_alpha: focal loss alpha (weight of positive pixels); < 0 disables the weighting.
        focal_gamma: focal loss gamma.
        iou_use_l1: L1 for the IoU prediction (SAM 2.1's choice); MSE if False.
        supervise_object_score: train the object score and give empty targets no mask loss.
            If False the object-score term is 0, ``object_score_logits`` may be None, and every
            object gets the mask losses.
        gate_masks_by_object_score: as SAM 2's training forward, the step sets the mask logits
            of an object whose object score is <= 0 to -1024 (read by ``interactive_loss``).
    """

    def __init__(
        self,
        *,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        object_score_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        iou_use_l1: bool = True,
        supervise_object_score: bool = True,
        gate_masks_by_object_score: bool = True,
    ) -> None:
        super().__init__()
        self.focal_weight = check_number("loss.focal_weight", focal_weight, ge=0)
        self.dice_weight = check_number("loss.dice_weight", dice_weight, ge=0)
        self.iou_weight = check_number("loss.iou_weight", iou_weight, ge=0)
        self.object_score_weight = check_number(
            "loss.object_score_weight", object_score_weight, ge=0
        )
        self.focal_alpha = check_number(
            "loss.focal_alpha", focal_alpha, le=1, note="< 0 turns the weighting off"
        )
        self.focal_gamma = check_number("loss.focal_gamma", focal_gamma, ge=0)
        self.iou_use_l1 = bool(iou_use_l1)
        self.supervise_object_score = bool(supervise_object_score)
        self.gate_masks_by_object_score = bool(gate_masks_by_object_score)

    def extra_repr(self) -> str:
        return (
            f"focal_weight={self.focal_weight}, dice_weight={self.dice_weight}, "
            f"iou_weight={self.iou_weight}, object_score_weight={self.object_score_weight}, "
            f"focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma}, "
            f"iou_use_l1={self.iou_use_l1}, supervise_object_score={self.supervise_object_score}"
        )

    def _check(
        self,
        mask_logits: torch.Tensor,
        iou_pred: torch.Tensor,
        object_score_logits: torch.Tensor | None,
        target: torch.Tensor,
    ) -> None:
        if mask_logits.dim() != 4:
            raise ValueError(
                f"SAM2Loss: mask_logits must be N x M x H x W, got {tuple(mask_logits.shape)}"
            )
        n, m, h, w = mask_logits.shape
        if n == 0:
            raise ValueError("SAM2Loss: got 0 objects; there is nothing to compute a loss on")
        if target.shape != (n, h, w):
            raise ValueError(
                f"SAM2Loss: target must be N x H x W = {(n, h, w)} to match mask_logits "
                f"{tuple(mask_logits.shape)}, got {tuple(target.shape)} (upsample the logits first)"
            )
        if iou_pred.shape != (n, m):
            raise ValueError(
                f"SAM2Loss: iou_pred must be N x M = {(n, m)}, got {tuple(iou_pred.shape)}"
            )
        if self.supervise_object_score:
            if object_score_logits is None:
                raise ValueError(
                    "SAM2Loss: object_score_logits is required when supervise_object_score"
                )
            if object_score_logits.shape != (n, 1):
                raise ValueError(
                    f"SAM2Loss: object_score_logits must be N x 1 = {(n, 1)}, "
                    f"got {tuple(object_score_logits.shape)}"
                )

    def forward(
        self,
        mask_logits: torch.Tensor,
        iou_pred: torch.Tensor,
        object_score_logits: torch.Tensor | None,
        target: torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss of one prediction step.

        Args:
            mask_logits: ``N x M x H x W`` mask logits (M = 1 or 3) at the target's size.
            iou_pred: ``N x M`` predicted IoUs.
            object_score_logits: ``N x 1`` object-present logits (None allowed only without
                ``supervise_object_score``).
            target: ``N x H x W`` bool ground truth.
            ignore: ``N x H x W`` bool, the pixels of each object that count in no term (not
                labelled in the dataset), or None.

        Returns:
            ``loss``: the weighted total to back-propagate; ``focal``, ``dice``, ``iou``,
            ``object_score``: the unweighted terms, each averaged over the N objects.
        """
        self._check(mask_logits, iou_pred, object_score_logits, target)
        n = mask_logits.shape[0]
        logits = mask_logits.float()
        target_bool = target.bool()[:, None]
        counted = None
        if ignore is not None:
            if ignore.shape != target.shape:
                raise ValueError(
                    f"SAM2Loss: ignore must be N x H x W = {tuple(target.shape)} like the "
                    f"target, got {tuple(ignore.shape)}"
                )
            counted = ~ignore.bool()[:, None] | target_bool  # an object's pixels always count
            target_bool = target_bool & counted
        target_float = target_bool.float()

        focal_pixels = sigmoid_focal_loss(
            logits,
            target_float.expand_as(logits),
            alpha=self.focal_alpha if self.focal_alpha >= 0 else -1.0,  # torchvision's "off"
            gamma=self.focal_gamma,
            reduction="none",
        )
        if counted is None:
            focal_all = focal_pixels.flatten(2).mean(dim=-1)
        else:
            weights = counted.expand_as(logits).flatten(2).float()
            focal_all = (focal_pixels.flatten(2) * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(
                min=1.0
            )
        dice_all = dice_loss(logits, target_float, counted)
        actual_iou = mask_iou(logits.detach(), target_bool, counted)
        if self.iou_use_l1:
            iou_all = F.l1_loss(iou_pred.float(), actual_iou, reduction="none")
        else:
            iou_all = F.mse_loss(iou_pred.float(), actual_iou, reduction="none")

        combo = self.focal_weight * focal_all + self.dice_weight * dice_all
        best = combo.detach().argmin(dim=1)
        rows = torch.arange(n, device=logits.device)
        focal = focal_all[rows, best]
        dice = dice_all[rows, best]
        iou = iou_all.mean(dim=1)

        present = target_bool.flatten(1).any(dim=1).float()
        if self.supervise_object_score:
            weight = present
            object_score = F.binary_cross_entropy_with_logits(
                object_score_logits.float()[:, 0], present, reduction="mean"
            )
        else:
            weight = torch.ones_like(present)
            object_score = logits.new_zeros(())

        focal = (focal * weight).sum() / n
        dice = (dice * weight).sum() / n
        iou = (iou * weight).sum() / n
        loss = (
            self.focal_weight * focal
            + self.dice_weight * dice
            + self.iou_weight * iou
            + self.object_score_weight * object_score
        )
        return {
            "loss": loss,
            "focal": focal,
            "dice": dice,
            "iou": iou,
            "object_score": object_score,
        }
