"""The protocols ``point1``, ``box`` and ``clicks`` on one batch of images.

Each step is what application code does with the official ``SAM2ImagePredictor`` for one
object — the same prompt coordinates, mask choice, mask input and post-processing — but for
all objects of the batch in one :meth:`~samtune.segmenter.base.Segmenter.decode` call.
Validation during training runs the same code, through
:meth:`samtune.evaluation.Evaluator.run_batch`, on the val split's original-resolution samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from samtune.evaluation.batching import ObjectBatch
from samtune.evaluation.clicks import center_points, error_center_clicks
from samtune.metrics.functional import mask_iou
from samtune.prompts.sampling import mask_to_box
from samtune.segmenter.base import Decoded, Features, Segmenter

PROTOCOLS = ("point1", "box", "clicks")
# The version of each protocol's definition (prompt rule, mask choice, resolution, objects
# scored), written to results.json as ``protocol_version``. A change of definition raises it,
# with a CHANGELOG.md entry, so that numbers of two definitions are never compared unawares.
PROTOCOL_VERSIONS = {"point1": 2, "box": 2, "clicks": 2}
MASK_INPUT_CLAMP = 32.0  # SAM2ImagePredictor clamps the low-res logits it returns to +-32


@dataclass
class Outcome:
    """One protocol on a batch.

    Attributes:
        preds: per image, ``K_i x H_i x W_i`` bool final masks at the original resolution.
        pred_iou: ``N`` predicted IoU of each final mask.
        points: ``N x P x 2`` clicks in original pixels, or None.
        labels: ``N x P`` click labels, or None.
        boxes: ``N x 4`` XYXY box prompts in original pixels, or None.
        iou_per_click: ``N x K`` IoU after each click (``clicks`` only).
    """

    preds: list[torch.Tensor]
    pred_iou: torch.Tensor
    points: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    iou_per_click: torch.Tensor | None = None


def to_input_frame(coords: torch.Tensor, hw: torch.Tensor, image_size: int) -> torch.Tensor:
    """Original-pixel ``(x, y)`` to the model's input frame, as ``SAM2Transforms.transform_coords``.

    Args:
        coords: ``N x P x 2`` float32 points of N objects.
        hw: ``N x 2`` (H, W) of each object's image.
        image_size: the model's input size S.

    Returns:
        ``N x P x 2``: ``x / W * S``, ``y / H * S``, in the predictor's operation order.
    """
    coords = coords.clone()
    coords[..., 0] = coords[..., 0] / hw[:, 1:2]
    coords[..., 1] = coords[..., 1] / hw[:, 0:1]
    return coords * image_size


def object_ious(batch: ObjectBatch, preds: list[torch.Tensor]) -> torch.Tensor:
    """``N`` IoUs of per-image predictions (``K_i x H_i x W_i`` bool) with ``batch``'s ground
    truth, objects in batch order (1 when both masks are empty); an image's ignored pixels count
    in neither mask."""
    return torch.cat(
        [
            mask_iou(p, g, batch.ignore_of(i))
            for i, (p, g) in enumerate(zip(preds, batch.gts, strict=True))
        ]
    )


class ProtocolRunner:
    """Runs the protocols on the objects of one encoded image batch.

    Args:
        segmenter: the model.
        features: ``segmenter.encode`` output for the batch's images.
        batch: the objects.
        objects_per_decode: None for one decoder call per step, else the largest chunk.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        features: Features,
        batch: ObjectBatch,
        *,
        objects_per_decode: int | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.features = features
        self.batch = batch
        self.image_size = int(segmenter.image_size)
        self.chunk = objects_per_decode

    def run(self, protocol: str, *, max_clicks: int) -> Outcome:
        """Run ``protocol`` (``point1``, ``box`` or ``clicks`` with ``max_clicks`` clicks)."""
        if protocol == "point1":
            return self.point1()
        if protocol == "box":
            return self.box()
        if protocol == "clicks":
            return self.clicks(max_clicks)
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")

    def to_input(self, coords: torch.Tensor) -> torch.Tensor:
        """``N x P x 2`` original-pixel points in the model's input frame."""
        if self.batch.input_frame:
            return coords
        return to_input_frame(coords, self.batch.hw, self.image_size)

    def decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        *,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool,
    ) -> Decoded:
        """``segmenter.decode`` over every object (input-frame prompts), chunked if asked."""
        img_idx = self.batch.img_idx
        n = int(img_idx.numel())
        step = self.chunk or max(n, 1)
        parts = []
        for start in range(0, n, step):
            rows = slice(start, start + step)

            def take(x: torch.Tensor | None, rows: slice = rows) -> torch.Tensor | None:
                return None if x is None else x[rows]

            parts.append(
                self.segmenter.decode(
                    self.features,
                    img_idx[rows],
                    take(coords),
                    take(labels),
                    boxes=take(boxes),
                    mask_input=take(mask_input),
                    multimask_output=multimask_output,
                )
            )
        return Decoded.cat(parts)

    def masks(self, low_res: torch.Tensor) -> list[torch.Tensor]:
        """``N x 1 x h x w`` logits upsampled to each image's size and thresholded at 0."""
        masks = []
        for logits, gt in zip(self.batch.split(low_res), self.batch.gts, strict=True):
            step = self.chunk or max(len(logits), 1)
            size = tuple(gt.shape[-2:])
            masks.append(
                torch.cat([self.segmenter.upsample(c, size)[:, 0] > 0 for c in logits.split(step)])
            )
        return masks

    def ious(self, preds: list[torch.Tensor]) -> torch.Tensor:
        """``N`` IoUs of per-image predictions with the ground truth."""
        return object_ious(self.batch, preds)

    def _center_click(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One positive click at each object's center, multimask output, best mask by score."""
        points = torch.cat([center_points(gt) for gt in self.batch.gts])[:, None, :]  # N x 1 x 2
        labels = torch.ones(points.shape[:2], dtype=torch.int32, device=points.device)
        coords = self.to_input(points)
        low_res, pred_iou = self.decode(coords, labels, multimask_output=True).best()
        return points, labels, low_res, pred_iou

    def point1(self) -> Outcome:
        """The center click, best of the three masks by predicted IoU."""
        points, labels, low_res, pred_iou = self._center_click()
        return Outcome(self.masks(low_res), pred_iou, points=points, labels=labels)

    def box(self) -> Outcome:
        """The tight box, single-mask output."""
        boxes = torch.cat([mask_to_box(gt) for gt in self.batch.gts])  # N x 4
        corners = self.to_input(boxes.reshape(-1, 2, 2))
        decoded = self.decode(None, None, boxes=corners.reshape(-1, 4), multimask_output=False)
        return Outcome(self.masks(decoded.low_res_logits), decoded.iou_pred[:, 0], boxes=boxes)

    def clicks(self, max_clicks: int) -> Outcome:
        """``point1``, then correction clicks at the center of the largest error region.

        From the second click on: every click so far, single-mask output, and the previous
        step's low-res logits (clamped to +-32, as the predictor returns them) as mask input.
        The error region is taken on the original-resolution prediction, without the image's
        ignored pixels (a prediction there is no error).
        """
        points, labels, low_res, pred_iou = self._center_click()
        preds = self.masks(low_res)
        ious = [self.ious(preds)]
        for _ in range(1, max_clicks):
            new = [
                error_center_clicks(p, g, self.batch.ignore_of(i))
                for i, (p, g) in enumerate(zip(preds, self.batch.gts, strict=True))
            ]
            points = torch.cat([points, torch.cat([pt for pt, _ in new])], dim=1)
            labels = torch.cat([labels, torch.cat([lb for _, lb in new])], dim=1)
            decoded = self.decode(
                self.to_input(points),
                labels,
                mask_input=low_res.clamp(-MASK_INPUT_CLAMP, MASK_INPUT_CLAMP),
                multimask_output=False,
            )
            low_res, pred_iou = decoded.low_res_logits, decoded.iou_pred[:, 0]
            preds = self.masks(low_res)
            ious.append(self.ious(preds))
        return Outcome(
            preds, pred_iou, points=points, labels=labels, iou_per_click=torch.stack(ious, dim=1)
        )
