"""Prompt simulation from ground-truth masks, following SAM 2's training recipe.

SAM 2 trains interactively: a first prompt (a jittered box, or one click inside the object),
then a number of correction clicks, each drawn from the error region of the previous
prediction. :class:`PromptSimulator` produces those prompts for N objects at once; the caller
runs the decoder between steps. Every number of the recipe is a constructor argument, and
every random choice comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from samtune.prompts.sampling import (
    check_masks,
    flat_to_xy,
    jitter_boxes,
    mask_to_box,
    sample_pixels,
    uniform,
)
from samtune.validation import check_number, check_probability


@dataclass
class Prompts:
    """Prompts for N objects, in pixel coordinates of the mask frame (x = column, y = row).

    Attributes:
        point_coords: ``N x P x 2`` float clicks, or None.
        point_labels: ``N x P`` int32 labels (1 positive, 0 negative), or None.
        boxes: ``N x 4`` float XYXY boxes, or None.
        multimask: whether to ask the decoder for 3 masks (a single click) or 1.
    """

    point_coords: torch.Tensor | None
    point_labels: torch.Tensor | None
    boxes: torch.Tensor | None
    multimask: bool

    def add_points(self, coords: torch.Tensor, labels: torch.Tensor) -> Prompts:
        """These prompts plus new clicks (``N x K x 2``, ``N x K``), e.g. from a correction step.

        As in SAM 2, only a lone click asks for multiple masks: once a click is added to a box
        or to another click the result asks for one mask.
        """
        if self.point_coords is None:
            point_coords, point_labels = coords, labels.to(torch.int32)
        else:
            point_coords = torch.cat([self.point_coords, coords], dim=1)
            point_labels = torch.cat([self.point_labels, labels.to(torch.int32)], dim=1)
        return Prompts(point_coords, point_labels, self.boxes, multimask=False)

    def select(self, idx: torch.Tensor) -> Prompts:
        """The prompts of objects ``idx`` only."""

        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        return Prompts(
            pick(self.point_coords), pick(self.point_labels), pick(self.boxes), self.multimask
        )

    def to(self, device: torch.device | str) -> Prompts:
        """The same prompts on ``device``."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Prompts(
            move(self.point_coords), move(self.point_labels), move(self.boxes), self.multimask
        )


class PromptSimulator:
    """SAM 2's training prompts: a first box or click, then correction clicks from the errors.

    Args:
        box_prob: probability that the first prompt of a call is a box (else one click).
        box_noise: box corner jitter as a fraction of the box side (width for x, height for y).
        box_noise_max_px: upper bound of the box corner jitter, in pixels.
        correction_clicks: number of correction clicks after the first prompt (read by the
            training loop, which alternates decoder calls and :meth:`correction`).
        click_from_gt_prob: per object and correction step, probability of drawing the click
            from the ground-truth mask instead of the error region. SAM 2 draws this once per
            step for all objects; here each object draws on its own.
        multimask_single_click: ask for 3 masks when the first prompt is a single click.
        max_objects_per_image: at most this many objects per image are prompted in one step
            (a random subset, see :meth:`select_objects`); None for no limit.
    """

    def __init__(
        self,
        *,
        box_prob: float = 0.5,
        box_noise: float = 0.1,
        box_noise_max_px: float = 20.0,
        correction_clicks: int = 7,
        click_from_gt_prob: float = 0.1,
        multimask_single_click: bool = True,
        max_objects_per_image: int | None = 16,
    ) -> None:
        self.box_prob = check_probability("prompts.box_prob", box_prob)
        self.box_noise = check_number("prompts.box_noise", box_noise, ge=0)
        self.box_noise_max_px = check_number("prompts.box_noise_max_px", box_noise_max_px, ge=0)
        self.correction_clicks = check_number(
            "prompts.correction_clicks", correction_clicks, ge=0, integer=True
        )
        self.click_from_gt_prob = check_probability(
            "prompts.click_from_gt_prob", click_from_gt_prob
        )
        self.multimask_single_click = bool(multimask_single_click)
        self.max_objects_per_image = check_number(
            "prompts.max_objects_per_image",
            max_objects_per_image,
            ge=1,
            integer=True,
            none_ok=True,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(box_prob={self.box_prob}, box_noise={self.box_noise}, "
            f"box_noise_max_px={self.box_noise_max_px}, correction_clicks={self.correction_clicks}, "
            f"click_from_gt_prob={self.click_from_gt_prob}, "
            f"multimask_single_click={self.multimask_single_click}, "
            f"max_objects_per_image={self.max_objects_per_image})"
        )

    def select_objects(
        self, num_objects: int, *, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Indices of the objects of one image to prompt: all of them, or a random subset.

        Args:
            num_objects: how many objects the image has.
            generator: source of randomness.

        Returns:
            Sorted long indices on the generator's device (CPU without a generator), at most
            ``max_objects_per_image`` of them.
        """
        if int(num_objects) != num_objects or num_objects < 0:
            raise ValueError(
                f"select_objects: num_objects must be an integer >= 0, got {num_objects!r}"
            )
        device = generator.device if generator is not None else torch.device("cpu")
        cap = self.max_objects_per_image
        if cap is None or num_objects <= cap:
            return torch.arange(int(num_objects), device=device)
        chosen = torch.randperm(int(num_objects), generator=generator, device=device)[:cap]
        return chosen.sort().values

    def initial(
        self,
        masks: torch.Tensor,
        *,
        generator: torch.Generator | None,
        use_box: bool | None = None,
    ) -> Prompts:
        """The first prompt for every object: one draw picks a box or a click for all of them.

        Args:
            masks: ``N x H x W`` bool ground-truth masks, none of them empty.
            generator: source of randomness.
            use_box: the box-or-click choice made by the caller (e.g. once for a batch whose
                images draw the rest from streams of their own); None draws it here with
                probability ``box_prob``.

        Returns:
            Jittered tight boxes (``multimask=False``), or one positive click per object drawn
            uniformly from its pixels (``multimask=multimask_single_click``).

        Raises:
            ValueError: masks of the wrong shape or dtype, or an empty mask.
        """
        check_masks(masks, name="initial(masks)")
        empty = ~masks.flatten(1).any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(
                f"initial(masks): mask(s) {rows} are empty; there is no object to prompt"
            )
        n, h, w = masks.shape
        if use_box is None:
            use_box = self.draw_box(generator)
        if use_box:
            boxes = jitter_boxes(
                mask_to_box(masks),
                frame=(h, w),
                noise=self.box_noise,
                max_px=self.box_noise_max_px,
                generator=generator,
            )
            return Prompts(None, None, boxes, multimask=False)
        coords = flat_to_xy(sample_pixels(masks, generator=generator), width=w).unsqueeze(1)
        labels = torch.ones(n, 1, dtype=torch.int32, device=masks.device)
        return Prompts(coords, labels, None, multimask=self.multimask_single_click)

    def draw_box(self, generator: torch.Generator | None) -> bool:
        """Whether a first prompt is a box (probability ``box_prob``), one draw from ``generator``."""
        device = generator.device if generator is not None else torch.device("cpu")
        return bool(uniform((1,), generator=generator, device=device)[0] < self.box_prob)

    def correction(
        self,
        pred: torch.Tensor,
        gt: torch.Tensor,
        *,
        generator: torch.Generator | None,
        ignore: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One correction click per object, drawn uniformly from where ``pred`` is wrong.

        A click in a missed object pixel (false negative) is positive, a click in a wrongly
        covered pixel (false positive) is negative. With probability ``click_from_gt_prob`` per
        object the click comes from the ground-truth mask instead (positive). Where the
        prediction is already perfect, the click is a negative one from the background, or a
        positive one from the object if the object fills the frame. An object drawn from the
        ground truth whose ground truth is empty falls back to its errors. No click is drawn
        from an ignored pixel (``ignore``, outside the object): an error there is no error, and
        the background fallback leaves those pixels out too (the object itself when nothing
        else is left).

        Args:
            pred: ``N x H x W`` bool prediction (logits > 0) in the mask frame.
            gt: ``N x H x W`` bool ground truth.
            generator: source of randomness.
            ignore: ``N x H x W`` bool pixels not labelled in the dataset, or None.

        Returns:
            ``N x 1 x 2`` float (x, y) clicks and ``N x 1`` int32 labels.
        """
        check_masks(pred, name="correction(pred)")
        check_masks(gt, name="correction(gt)")
        if pred.shape != gt.shape:
            raise ValueError(
                f"correction: pred has shape {tuple(pred.shape)} but gt has {tuple(gt.shape)}"
            )
        n, _, w = gt.shape
        from_gt = uniform((n,), generator=generator, device=gt.device) < self.click_from_gt_prob
        has_gt = gt.flatten(1).any(dim=1)
        background = ~gt
        if ignore is not None:
            if ignore.shape != gt.shape:
                raise ValueError(
                    f"correction: ignore has shape {tuple(ignore.shape)} but gt has "
                    f"{tuple(gt.shape)}"
                )
            background = background & ~ignore.bool()
        errors = (pred ^ gt) & (gt | background)
        region = torch.where((from_gt & has_gt)[:, None, None], gt, errors)
        nothing = ~region.flatten(1).any(dim=1)
        has_background = background.flatten(1).any(dim=1)
        fallback = torch.where(has_background[:, None, None], background, gt)
        region = torch.where(nothing[:, None, None], fallback, region)
        flat = sample_pixels(region, generator=generator)
        # Inside the error region a ground-truth pixel is a miss (positive click), a background
        # pixel a false alarm (negative); the same rule labels clicks from gt or background.
        labels = gt.flatten(1).gather(1, flat[:, None]).to(torch.int32)
        coords = flat_to_xy(flat, width=w).unsqueeze(1)
        return coords, labels
