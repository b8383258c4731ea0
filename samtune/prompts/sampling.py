"""Generator-driven sampling primitives behind the prompt simulator.

Everything here works on whole batches of ``N x H x W`` boolean masks at once and draws its
randomness only from the ``torch.Generator`` it is given, so a seed fixes every prompt.

Coordinates follow SAM 2: pixel indices of the mask frame, ``x`` = column, ``y`` = row, and a
box is ``(x_min, y_min, x_max, y_max)`` with the maxima being the last pixel inside the object
(the same convention as ``sam2.utils.misc.mask_to_box``).
"""

from __future__ import annotations

import torch
from torchvision.ops import masks_to_boxes


def check_masks(masks: torch.Tensor, *, name: str) -> None:
    """Raise if ``masks`` is not an ``N x H x W`` bool tensor with a non-empty frame.

    Args:
        masks: the tensor to check.
        name: how to call it in the error message.
    """
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(masks).__name__}")
    if masks.dim() != 3:
        raise ValueError(f"{name}: expected N x H x W masks, got shape {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(
            f"{name}: expected dtype torch.bool, got {masks.dtype} (threshold logits with > 0 first)"
        )
    if masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(f"{name}: the mask frame is empty, shape {tuple(masks.shape)}")


def uniform(
    shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform ``[0, 1)`` float32 noise drawn from ``generator``, returned on ``device``.

    The noise is drawn on the generator's own device (a CPU generator therefore gives the same
    numbers whether the masks live on the CPU or a GPU) and then moved to ``device``.
    """
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of ``N x H x W`` masks as ``N x 4`` float32 XYXY pixel coordinates.

    The one box rule of samtune: the training prompts jitter it, the ``box`` evaluation protocol
    uses it as is. ``torchvision.ops.masks_to_boxes`` computes it; the maxima are inclusive (the
    last column/row of the object), as in ``sam2.utils.misc.mask_to_box``.

    Args:
        masks: ``N x H x W`` (bool, or anything where non-zero is inside).

    Returns:
        ``N x 4`` float32 ``(x_min, y_min, x_max, y_max)`` on the masks' device.

    Raises:
        ValueError: masks that are not ``N x H x W``, or an empty mask (naming its index).
    """
    if masks.dim() != 3:
        raise ValueError(f"masks must be N x H x W, got shape {tuple(masks.shape)}")
    masks = masks.bool()
    empty = ~masks.flatten(1).any(dim=1)
    if bool(empty.any()):  # torchvision would give it the box (0, 0, 0, 0)
        raise ValueError(f"mask {int(empty.nonzero()[0])} is empty: a box needs at least one pixel")
    return masks_to_boxes(masks)


def jitter_boxes(
    boxes: torch.Tensor,
    *,
    frame: tuple[int, int],
    noise: float,
    max_px: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Move each corner coordinate of ``N x 4`` XYXY boxes by a uniform random offset.

    Each x coordinate moves by at most ``min(noise * width, max_px)`` and each y coordinate by
    at most ``min(noise * height, max_px)`` (width and height measured between the inclusive
    corners, as SAM 2 does), then the box is clamped to the frame ``0..W-1`` x ``0..H-1``. If a
    large ``noise`` swaps two corners, they are put back in order so the box stays XYXY.

    Args:
        boxes: ``N x 4`` float boxes.
        frame: ``(H, W)`` of the mask frame.
        noise: jitter as a fraction of the box side.
        max_px: upper bound of the jitter in pixels.
        generator: source of randomness.

    Returns:
        ``N x 4`` float jittered boxes.
    """
    h, w = frame
    if noise <= 0 or max_px <= 0:
        return boxes.clone()
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    reach_x = torch.clamp(width * noise, max=max_px)
    reach_y = torch.clamp(height * noise, max=max_px)
    reach = torch.stack([reach_x, reach_y, reach_x, reach_y], dim=1)
    offsets = (
        2 * uniform(tuple(boxes.shape), generator=generator, device=boxes.device) - 1
    ) * reach
    moved = boxes + offsets
    upper = torch.tensor([w - 1, h - 1, w - 1, h - 1], dtype=moved.dtype, device=moved.device)
    moved = torch.minimum(moved.clamp(min=0), upper)
    x0, y0, x1, y1 = moved.unbind(dim=1)
    return torch.stack(
        [
            torch.minimum(x0, x1),
            torch.minimum(y0, y1),
            torch.maximum(x0, x1),
            torch.maximum(y0, y1),
        ],
        dim=1,
    )


def sample_pixels(regions: torch.Tensor, *, generator: torch.Generator | None) -> torch.Tensor:
    """One pixel per row, uniformly from each non-empty ``N x H x W`` bool region.

    Every pixel of the region gets an independent uniform score and the best one wins, which
    is a uniform draw over the region done for all N rows in one tensor operation.

    Args:
        regions: ``N x H x W`` bool, each row with at least one True pixel.
        generator: source of randomness.

    Returns:
        ``N`` long flat indices ``y * W + x`` into the frame.

    Raises:
        ValueError: a region is empty.
    """
    flat = regions.flatten(1)
    empty = ~flat.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"cannot sample a pixel from empty region(s) at row(s) {rows}")
    scores = uniform(tuple(flat.shape), generator=generator, device=flat.device)
    scores = scores.masked_fill(~flat, -1.0)
    return scores.argmax(dim=1)


def flat_to_xy(flat_index: torch.Tensor, *, width: int) -> torch.Tensor:
    """Flat pixel indices ``y * W + x`` as ``N x 2`` float ``(x, y)`` coordinates."""
    return torch.stack([flat_index % width, flat_index // width], dim=1).float()
