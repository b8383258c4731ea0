"""The evaluation protocols ``point1``, ``box`` and ``clicks``, batched over images and objects.

Every number equals what application code gets from the official ``SAM2ImagePredictor``
driven one object at a time: the same preprocessing, the same prompt coordinates, the same
mask selection and post-processing, and metrics at the image's original resolution.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from samtune import engine
from samtune.data.sample import Sample
from samtune.evaluation.batching import ObjectBatch, SkipCounter, object_batches
from samtune.evaluation.clicks import center_points, error_center_clicks, tight_boxes
from samtune.evaluation.gallery import Example, Gallery, make_example
from samtune.evaluation.results import EvalResult, ObjectResult, threshold_key
from samtune.metrics.functional import mask_dice, mask_iou, number_of_clicks

log = logging.getLogger(__name__)

PROTOCOLS = ("point1", "box", "clicks")
MASK_INPUT_CLAMP = 32.0  # SAM2ImagePredictor clamps the low-res logits it returns to +-32


@dataclass
class _Outcome:
    """Result of one protocol on a batch: final masks, predicted IoUs and prompts per object."""

    preds: list[torch.Tensor]  # per image, K_i x H_i x W_i bool
    pred_iou: torch.Tensor  # N
    points: torch.Tensor | None = None  # N x P x 2 original pixels
    labels: torch.Tensor | None = None  # N x P
    boxes: torch.Tensor | None = None  # N x 4 original pixels
    iou_per_click: torch.Tensor | None = None  # N x K


def to_input_frame(coords: torch.Tensor, hw: torch.Tensor, image_size: int) -> torch.Tensor:
    """Original-pixel ``(x, y)`` to the model's input frame, as ``SAM2Transforms.transform_coords``.

    Args:
        coords: ``N x P x 2`` float32 points of N objects.
        hw: ``N x 2`` (H, W) of each object's image.
        image_size: the model's input size S.

    Returns:
        ``N x P x 2``: ``x / W * S``, ``y / H * S``, with the predictor's operation order.
    """
    coords = coords.clone()
    coords[..., 0] = coords[..., 0] / hw[:, 1:2]
    coords[..., 1] = coords[..., 1] / hw[:, 0:1]
    return coords * image_size


class Evaluator:
    """Runs the fixed evaluation protocols on a dataset of :class:`~samtune.data.sample.Sample`.

    Args:
        protocols: any of ``point1`` (center click, best of 3 masks), ``box`` (tight box) and
            ``clicks`` (center click then correction clicks at the center of the largest error).
        max_clicks: K, the clicks of the ``clicks`` protocol.
        noc_thresholds: IoU targets for NoC (clicks to reach them).
        image_batch: images encoded together.
        progress: show a tqdm bar (images, objects/s).
        gallery_size: best and worst objects kept per protocol for overlays.
        keep_masks: store each object's final predicted mask (``H x W`` bool) in its row's
            ``mask`` (for per-volume evaluation or export; costs memory on large datasets).
    """

    def __init__(
        self,
        *,
        protocols: Sequence[str] = PROTOCOLS,
        max_clicks: int = 20,
        noc_thresholds: Sequence[float] = (0.85, 0.90),
        image_batch: int = 4,
        progress: bool = True,
        gallery_size: int = 4,
        keep_masks: bool = False,
    ) -> None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(
                f"evaluation.protocols={list(protocols)}: unknown {unknown}; choose from {PROTOCOLS}"
            )
        if max_clicks < 1:
            raise ValueError(f"evaluation.max_clicks must be >= 1, got {max_clicks}")
        if image_batch < 1:
            raise ValueError(f"evaluation.image_batch must be >= 1, got {image_batch}")
        for t in noc_thresholds:
            if not 0.0 < float(t) <= 1.0:
                raise ValueError(f"evaluation.noc_thresholds must lie in (0, 1], got {t}")
        self.protocols = tuple(protocols)
        self.max_clicks = int(max_clicks)
        self.noc_thresholds = tuple(float(t) for t in noc_thresholds)
        self.image_batch = int(image_batch)
        self.progress = progress
        self.gallery_size = int(gallery_size)
        self.keep_masks = bool(keep_masks)

    # ------------------------------------------------------------------ driving
    def evaluate(
        self,
        model: torch.nn.Module,
        dataset: Iterable[Sample | None],
        *,
        device: str | torch.device = "cpu",
        max_images: int | None = None,
    ) -> EvalResult:
        """Evaluate ``model`` on ``dataset``.

        Args:
            model: an official ``SAM2Base`` (plain or with adapters merged).
            dataset: Samples at original resolution; a map-style dataset (``len`` and
                indexing) or any iterable. A None item (a sample the dataset skipped) is counted.
            device: where to run.
            max_images: stop after this many images (None: all).

        Returns:
            The per-object rows and aggregates.
        """
        result = EvalResult(
            protocols=self.protocols,
            max_clicks=self.max_clicks,
            noc_thresholds=self.noc_thresholds,
            gallery=Gallery(k=self.gallery_size),
        )
        was_training = model.training
        model.eval()
        model.to(device)
        start = time.perf_counter()
        bar = self._progress_bar(dataset, max_images)
        objects = 0
        skipped = SkipCounter()
        try:
            with torch.no_grad():
                batches = object_batches(
                    dataset,
                    image_batch=self.image_batch,
                    device=device,
                    skipped=skipped,
                    max_images=max_images,
                )
                for batch in batches:
                    self._evaluate_batch(model, batch, result)
                    objects += int(batch.img_idx.numel())
                    if bar is not None:
                        bar.update(len(batch.samples))
                        rate = objects / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(objects=objects, obj_per_s=f"{rate:.1f}")
        finally:
            if bar is not None:
                bar.close()
            model.train(was_training)
        result.seconds = time.perf_counter() - start
        result.skipped_images, result.skipped_objects = skipped.images, skipped.objects
        if skipped.images or skipped.objects:
            log.warning(
                "evaluation skipped %d image(s) (unreadable or without objects%s) and %d "
                "object(s) with an empty mask",
                skipped.images,
                f": {', '.join(skipped.files[:5])}" if skipped.files else "",
                skipped.objects,
            )
        return result

    def _progress_bar(self, dataset: Iterable, max_images: int | None):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        total = len(dataset) if hasattr(dataset, "__len__") else None
        if max_images is not None:
            total = max_images if total is None else min(total, max_images)
        return tqdm(total=total, unit="img", desc="evaluating", dynamic_ncols=True)

    # ------------------------------------------------------------------ protocols
    def _evaluate_batch(
        self, model: torch.nn.Module, batch: ObjectBatch, result: EvalResult
    ) -> None:
        image_size = int(model.image_size)
        images = engine.preprocess_like_predictor([s.image for s in batch.samples], image_size)
        device = batch.img_idx.device
        features = engine.encode(model, images.to(device))
        for protocol in self.protocols:
            run = {"point1": self._point1, "box": self._box, "clicks": self._clicks}[protocol]
            outcome = run(model, features, batch)
            self._record(protocol, batch, outcome, result)
        result.images += len(batch.samples)

    def _masks(self, low_res: torch.Tensor, batch: ObjectBatch) -> list[torch.Tensor]:
        """Upsample ``N x 1 x h x w`` logits to each image's size and threshold at 0."""
        return [
            engine.upsample_logits(logits, s.image.shape[:2])[:, 0] > 0
            for logits, s in zip(batch.split(low_res), batch.samples, strict=True)
        ]

    def _first_click(self, model, features, batch):
        points = torch.cat([center_points(gt) for gt in batch.gts])[:, None, :]  # N x 1 x 2
        labels = torch.ones(points.shape[:2], dtype=torch.int32, device=points.device)
        decoded = engine.decode(
            model,
            features,
            batch.img_idx,
            to_input_frame(points, batch.hw, int(model.image_size)),
            labels,
            multimask_output=True,
        )
        low_res, pred_iou = decoded.best()
        return points, labels, low_res, pred_iou

    def _point1(self, model, features, batch: ObjectBatch) -> _Outcome:
        points, labels, low_res, pred_iou = self._first_click(model, features, batch)
        return _Outcome(self._masks(low_res, batch), pred_iou, points=points, labels=labels)

    def _box(self, model, features, batch: ObjectBatch) -> _Outcome:
        boxes = torch.cat([tight_boxes(gt) for gt in batch.gts])  # N x 4
        corners = to_input_frame(boxes.reshape(-1, 2, 2), batch.hw, int(model.image_size))
        decoded = engine.decode(
            model,
            features,
            batch.img_idx,
            None,
            None,
            boxes=corners.reshape(-1, 4),
            multimask_output=False,
        )
        return _Outcome(
            self._masks(decoded.low_res_logits, batch), decoded.iou_pred[:, 0], boxes=boxes
        )

    def _clicks(self, model, features, batch: ObjectBatch) -> _Outcome:
        points, labels, low_res, pred_iou = self._first_click(model, features, batch)
        preds = self._masks(low_res, batch)
        ious = [torch.cat([mask_iou(p, g) for p, g in zip(preds, batch.gts, strict=True)])]
        for _ in range(1, self.max_clicks):
            new = [error_center_clicks(p, g) for p, g in zip(preds, batch.gts, strict=True)]
            points = torch.cat([points, torch.cat([pt for pt, _ in new])], dim=1)
            labels = torch.cat([labels, torch.cat([lb for _, lb in new])], dim=1)
            decoded = engine.decode(
                model,
                features,
                batch.img_idx,
                to_input_frame(points, batch.hw, int(model.image_size)),
                labels,
                mask_input=low_res.clamp(-MASK_INPUT_CLAMP, MASK_INPUT_CLAMP),
                multimask_output=False,
            )
            low_res, pred_iou = decoded.low_res_logits, decoded.iou_pred[:, 0]
            preds = self._masks(low_res, batch)
            ious.append(torch.cat([mask_iou(p, g) for p, g in zip(preds, batch.gts, strict=True)]))
        return _Outcome(
            preds, pred_iou, points=points, labels=labels, iou_per_click=torch.stack(ious, dim=1)
        )

    # ------------------------------------------------------------------ bookkeeping
    def _record(
        self, protocol: str, batch: ObjectBatch, outcome: _Outcome, result: EvalResult
    ) -> None:
        clicks_to: dict[str, list[int]] = {}
        curves: list[list[float]] | None = None
        if outcome.iou_per_click is not None:
            for t in self.noc_thresholds:
                clicks_to[threshold_key(t)] = number_of_clicks(outcome.iou_per_click, t).tolist()
            curves = outcome.iou_per_click.cpu().tolist()
        pred_iou = outcome.pred_iou.float().cpu().tolist()
        j = 0
        for sample, keep, gt, pred in zip(
            batch.samples, batch.keep, batch.gts, outcome.preds, strict=True
        ):
            ious = mask_iou(pred, gt).tolist()
            dices = mask_dice(pred, gt).tolist()
            areas = gt.flatten(1).sum(1).tolist()
            for i, obj in enumerate(keep):
                class_id = int(sample.class_ids[obj])
                row = ObjectResult(
                    image_id=sample.meta.get("image_id", sample.meta.get("file", "")),
                    file=str(sample.meta.get("file", "")),
                    object=int(obj),
                    class_id=class_id,
                    class_name=_class_name(sample, class_id),
                    protocol=protocol,
                    area=int(areas[i]),
                    iou=float(ious[i]),
                    dice=float(dices[i]),
                    pred_iou=float(pred_iou[j]),
                    clicks_to={k: int(v[j]) for k, v in clicks_to.items()} or None,
                    iou_per_click=None if curves is None else curves[j],
                    mask=pred[i].cpu().numpy() if self.keep_masks else None,
                )
                result.rows.append(row)
                build = partial(_example, row, sample.image, gt[i], pred[i], outcome, j)
                result.gallery.offer(protocol, row.iou, build)
                j += 1


def _class_name(sample: Sample, class_id: int) -> str:
    """The class's name from ``meta["class_names"]`` (keys int or str), else the id as text."""
    names = sample.meta.get("class_names") or {}
    return str(names.get(class_id, names.get(str(class_id), class_id)))


def _example(
    row: ObjectResult,
    image: np.ndarray,
    gt: torch.Tensor,
    pred: torch.Tensor,
    outcome: _Outcome,
    j: int,
) -> Example:
    """The overlay crop of object ``j`` of a batch."""

    def numpy_or_none(values: torch.Tensor | None) -> np.ndarray | None:
        return None if values is None else values[j].cpu().numpy()

    return make_example(
        protocol=row.protocol,
        iou=row.iou,
        image=image,
        gt=gt.cpu().numpy(),
        pred=pred.cpu().numpy(),
        points=numpy_or_none(outcome.points),
        labels=numpy_or_none(outcome.labels),
        box=numpy_or_none(outcome.boxes),
        image_id=row.image_id,
        file=row.file,
        object_index=row.object,
        class_name=row.class_name,
    )
