"""SAM 2's interactive training loss on any :class:`~samtune.segmenter.base.Segmenter`, torch only.

One decoder pass for the initial prompts (a box or a click per object, from the prompt
simulator), then one per correction click sampled from the error region of the previous
prediction, its low-resolution logits fed back as the mask prompt; every pass's loss terms are
summed. Used by the LightningModule's ``training_step``, and usable without Lightning.
"""

from __future__ import annotations

from typing import Any

import torch

from samtune.prompts.streams import PromptStreams
from samtune.segmenter.base import Decoded, Features, Segmenter
from samtune.segmenter.checkpointing import run_checkpointed

#: The logit SAM 2 writes where the object score says "no object" (``sam2.modeling.sam2_base``).
NO_OBJECT_LOGIT = -1024.0


def gate_by_object_score(out: Decoded) -> Decoded:
    """``out`` with its mask logits set to :data:`NO_OBJECT_LOGIT` where the object score is <= 0.

    The training forward of SAM 2 (``SAM2Base._forward_sam_heads``) does this before the
    logits reach the loss, the mask prompt of the next step and the correction clicks.
    """
    present = (out.object_score_logits > 0).reshape(-1, 1, 1, 1)
    low = torch.where(present, out.low_res_logits, out.low_res_logits.new_tensor(NO_OBJECT_LOGIT))
    return Decoded(low, out.iou_pred, out.object_score_logits)


def as_streams(generator: torch.Generator | PromptStreams) -> PromptStreams:
    """``generator`` as prompt streams (one generator shared by every image)."""
    return generator if isinstance(generator, PromptStreams) else PromptStreams(generator)


def gather_objects(
    masks: list[torch.Tensor],
    prompts: Any,
    generator: torch.Generator | PromptStreams | None,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """The objects of a batch, flattened: ``N x S x S`` masks and the image of each.

    Args:
        masks: per image, ``K_i x S x S`` bool instance masks.
        prompts: the prompt simulator (it caps the objects per image).
        generator: picks the capped objects; None keeps every object.

    Returns:
        ``(gt, img_idx)``, or ``(None, None)`` when the batch holds no object.
    """
    gts, idx = [], []
    if generator is not None:
        masks = as_streams(generator).select_objects(prompts, masks)
    for i, m in enumerate(masks):
        if m.shape[0] == 0:
            continue
        gts.append(m)
        idx.append(torch.full((m.shape[0],), i, dtype=torch.long, device=m.device))
    if not gts:
        return None, None
    return torch.cat(gts), torch.cat(idx)


def object_ignore(ignore: torch.Tensor | None, img_idx: torch.Tensor | None) -> torch.Tensor | None:
    """Each object's ignore mask (``N x S x S``) from a batch's ``B x S x S`` one and the image
    of each object; None when the batch has none."""
    if ignore is None or img_idx is None:
        return None
    return ignore.to(img_idx.device)[img_idx]


def prompt_step(
    segmenter: Segmenter,
    loss_fn: torch.nn.Module,
    features: Features,
    img_idx: torch.Tensor,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    multimask: bool,
    gt: torch.Tensor,
    ignore: torch.Tensor | None = None,
) -> tuple[Decoded, dict[str, torch.Tensor]]:
    """One decoder pass and its loss terms (the unit of prompt-step checkpointing); ``ignore``
    (``N x S x S`` bool or None) reaches the loss as its ``ignore``."""
    out = segmenter.decode(
        features,
        img_idx,
        coords,
        labels,
        boxes=boxes,
        mask_input=mask_input,
        multimask_output=multimask,
    )
    if getattr(loss_fn, "gate_masks_by_object_score", False):
        out = gate_by_object_score(out)
    logits = segmenter.upsample(out.low_res_logits, tuple(gt.shape[-2:]))
    if ignore is None:
        return out, loss_fn(logits, out.iou_pred, out.object_score_logits, gt)
    return out, loss_fn(logits, out.iou_pred, out.object_score_logits, gt, ignore=ignore)


def interactive_loss(
    segmenter: Segmenter,
    features: Features,
    gt: torch.Tensor,
    img_idx: torch.Tensor,
    generator: torch.Generator | PromptStreams,
    *,
    prompts: Any,
    loss_fn: torch.nn.Module,
    checkpoint_steps: bool = False,
    ignore: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """SAM 2's interactive training loss for the objects ``gt`` (``N x S x S`` bool).

    Args:
        segmenter: the model; ``features`` come from its ``encode``.
        features: the features of the batch's images.
        gt: the objects' masks at input resolution.
        img_idx: ``N`` long, the image of each object.
        generator: the random prompts: one generator, or the batch's
            :class:`~samtune.prompts.PromptStreams` (one stream per image).
        prompts: the prompt simulator (``samtune.prompts.PromptSimulator``).
        loss_fn: ``loss_fn(logits, iou_pred, object_score_logits, gt)`` -> dict of terms.
        checkpoint_steps: recompute each prompt step in the backward pass instead of keeping
            its activations.
        ignore: ``N x S x S`` bool, the pixels of each object's image not labelled in the
            dataset (see :func:`object_ignore`), or None: the loss leaves them out and no
            correction click is drawn from them.

    Returns:
        Each loss term summed over the prompt steps (``"loss"`` among them).
    """
    device = gt.device
    size = tuple(gt.shape[-2:])
    gt_cpu = gt.cpu()
    ignore_cpu = None if ignore is None else ignore.cpu()
    streams = as_streams(generator)
    first = streams.initial(prompts, gt_cpu, img_idx)
    coords = None if first.point_coords is None else first.point_coords.to(device)
    labels = None if first.point_labels is None else first.point_labels.to(device)
    boxes = None if first.boxes is None else first.boxes.to(device)
    mask_input = None
    totals: dict[str, torch.Tensor] = {}
    steps = 1 + int(prompts.correction_clicks)
    for step in range(steps):
        multimask = bool(first.multimask and step == 0)
        out, terms = run_checkpointed(
            prompt_step,
            segmenter,
            loss_fn,
            features,
            img_idx,
            coords,
            labels,
            boxes,
            mask_input,
            multimask,
            gt,
            ignore,
            enabled=checkpoint_steps,
        )
        for k, v in terms.items():
            totals[k] = totals[k] + v if k in totals else v
        if step + 1 == steps:
            break
        best_low, _ = out.best()
        pred = segmenter.upsample(best_low.detach(), size)[:, 0] > 0
        new_c, new_l = streams.correction(prompts, pred.cpu(), gt_cpu, img_idx, ignore_cpu)
        new_c, new_l = new_c.to(device), new_l.to(device)
        coords = new_c if coords is None else torch.cat([coords, new_c], 1)
        labels = new_l if labels is None else torch.cat([labels, new_l], 1)
        mask_input = best_low
    return totals
