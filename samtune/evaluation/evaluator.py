"""``Evaluator``: the protocols ``point1``, ``box`` and ``clicks`` over a dataset, batched.

Every number equals what application code gets from the official ``SAM2ImagePredictor``
driven one object at a time: the same preprocessing, the same prompt coordinates, the same
mask selection and post-processing, and metrics at the image's original resolution.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from samtune.data.datasets.volumes import VolumeSliceDataset
from samtune.data.sample import Sample, ignored_pixels
from samtune.evaluation.batching import ObjectBatch, SkipCounter, object_batches
from samtune.evaluation.protocols import PROTOCOLS, Outcome, ProtocolRunner
from samtune.evaluation.report.gallery import Example, Gallery, make_example
from samtune.evaluation.results import EvalResult, ObjectResult, threshold_key
from samtune.evaluation.volumes import volume_evaluation
from samtune.metrics.functional import mask_dice, mask_iou, number_of_clicks
from samtune.segmenter.base import Segmenter, no_autocast
from samtune.segmenter.sam2 import as_segmenter
from samtune.validation import check_number

log = logging.getLogger(__name__)

ENCODER_PRECISIONS = ("fp32", "bf16")


class Evaluator:
    """Runs the fixed evaluation protocols on a dataset of :class:`~samtune.data.sample.Sample`.

    Args:
        protocols: any of ``point1`` (center click, best of 3 masks), ``box`` (tight box) and
            ``clicks`` (center click then correction clicks at the center of the largest error).
        max_clicks: K, the clicks of the ``clicks`` protocol.
        noc_thresholds: IoU targets for NoC (clicks to reach them).
        image_batch: images encoded together; ``"auto"`` (default) is 1 on a CPU and 4 on an
            accelerator (measured on a 2-core CPU at 1024 px: two images one at a time 10.5 s,
            together 11.5-13.5 s).
        progress: show a tqdm bar (images, objects/s).
        gallery_size: best and worst objects kept per protocol for overlays.
        keep_masks: store each object's final predicted mask (``H x W`` bool) in its row's
            ``mask`` (for per-volume evaluation or export; costs memory on large datasets).
        objects_per_decode: objects per decoder call. None decodes all objects of an image batch
            in one call per protocol and click step; a number splits that call into chunks of at
            most this many objects; ``"auto"`` (default) is, on a CPU,
            :func:`cpu_decode_chunk`: the decoder's per-object activations at 1024 px (8 MB for
            the upscaled mask features alone) outgrow the CPU caches, and two objects per call
            are then twice as fast per object as sixteen; on an accelerator
            :func:`accelerator_decode_chunk`, so that an image with hundreds of objects does not
            hold all their activations and full-resolution masks at once.
        encoder_precision: ``"fp32"`` (default) or ``"bf16"`` (the image encoder under bf16
            autocast, for speed on accelerators). The prompt encoder, mask decoder, IoU head and
            mask choice always run in float32, whatever autocast the caller has on: a result
            does not depend on the precision training used (validation runs this code too).
        allow_overlap: ``samtune-eval`` evaluates a split that shares images with the training
            split of the run that wrote the weights, with a warning, instead of stopping (see
            :mod:`samtune.evaluation.follow_run`).
    """

    def __init__(
        self,
        *,
        protocols: Sequence[str] = PROTOCOLS,
        max_clicks: int = 20,
        noc_thresholds: Sequence[float] = (0.85, 0.90),
        image_batch: int | str = "auto",
        progress: bool = True,
        gallery_size: int = 4,
        keep_masks: bool = False,
        objects_per_decode: int | str | None = "auto",
        encoder_precision: str = "fp32",
        allow_overlap: bool = False,
    ) -> None:
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise ValueError(
                f"evaluation.protocols={list(protocols)}: unknown {unknown}; choose from {PROTOCOLS}"
            )
        self.protocols = tuple(protocols)
        self.max_clicks = check_number("evaluation.max_clicks", max_clicks, ge=1, integer=True)
        self.noc_thresholds = tuple(
            check_number(f"evaluation.noc_thresholds[{i}]", t, gt=0, le=1)
            for i, t in enumerate(noc_thresholds)
        )
        self.image_batch = (
            image_batch
            if image_batch == "auto"
            else check_number(
                "evaluation.image_batch", image_batch, ge=1, integer=True, also="'auto'"
            )
        )
        self.progress = progress
        self.gallery_size = check_number(
            "evaluation.gallery_size", gallery_size, ge=0, integer=True
        )
        self.keep_masks = bool(keep_masks)
        self.allow_overlap = bool(allow_overlap)
        self.objects_per_decode = (
            objects_per_decode
            if objects_per_decode in (None, "auto")
            else check_number(
                "evaluation.objects_per_decode",
                objects_per_decode,
                ge=1,
                integer=True,
                none_ok=True,
                also="'auto'",
            )
        )

        if encoder_precision not in ENCODER_PRECISIONS:
            raise ValueError(
                f"evaluation.encoder_precision must be one of {ENCODER_PRECISIONS}, got "
                f"{encoder_precision!r}"
            )
        self.encoder_precision = encoder_precision

    def settings_for(
        self, model: Segmenter | torch.nn.Module, device: torch.device
    ) -> tuple[int, int | None]:
        """``(image_batch, objects_per_decode)`` with ``"auto"`` resolved for ``device``."""
        on_cpu = torch.device(device).type == "cpu"
        image_batch = self.image_batch
        if image_batch == "auto":
            image_batch = 1 if on_cpu else 4
        chunk = self.objects_per_decode
        if chunk == "auto":
            size = int(model.image_size)
            chunk = cpu_decode_chunk(size) if on_cpu else accelerator_decode_chunk(size)
        return image_batch, chunk

    # ------------------------------------------------------------------ driving
    def evaluate(
        self,
        model: Segmenter | torch.nn.Module,
        dataset: Iterable[Sample | None],
        *,
        device: str | torch.device = "cpu",
        max_images: int | None = None,
        min_object_area: int | None = None,
    ) -> EvalResult:
        """Evaluate ``model`` on ``dataset``.

        Args:
            model: a :class:`~samtune.segmenter.base.Segmenter`, or an official ``SAM2Base``
                (plain or with adapters merged), which runs as a
                :class:`~samtune.segmenter.sam2.Sam2Segmenter`.
            dataset: Samples at original resolution; a map-style dataset (``len`` and
                indexing) or any iterable. A None item (a sample the dataset skipped) is counted.
            device: where to run (the model is moved there and left there).
            max_images: stop after this many images (None: all).
            min_object_area: ``data.min_object_area``: objects with fewer pixels (and at least
                1) once resized to the model's ``image_size`` are not scored, as training
                drops them; they are counted in ``dropped_small``. None scores every non-empty
                object.

        Returns:
            The per-object rows and aggregates.
        """
        result = EvalResult(
            protocols=self.protocols,
            max_clicks=self.max_clicks,
            noc_thresholds=self.noc_thresholds,
            gallery=Gallery(k=self.gallery_size),
            min_object_area=min_object_area,
        )
        was_training = model.training
        segmenter = as_segmenter(model)
        segmenter.eval()
        segmenter.to(device)
        image_batch, objects_per_decode = self.settings_for(segmenter, torch.device(device))
        start = time.perf_counter()
        bar = self._progress_bar(dataset, max_images)
        objects = 0
        skipped = SkipCounter()
        try:
            with torch.no_grad():
                batches = object_batches(
                    dataset,
                    image_batch=image_batch,
                    device=device,
                    skipped=skipped,
                    max_images=max_images,
                    min_object_area=min_object_area,
                    image_size=int(segmenter.image_size),
                )
                for batch in batches:
                    self._evaluate_batch(segmenter, batch, result, objects_per_decode)
                    objects += int(batch.img_idx.numel())
                    if bar is not None:
                        bar.update(result.images + skipped.images - bar.n)
                        rate = objects / max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(objects=objects, obj_per_s=f"{rate:.1f}")
        finally:
            if bar is not None:
                bar.close()
            segmenter.train(was_training)
        result.seconds = time.perf_counter() - start
        result.skipped_images, result.skipped_objects = skipped.images, skipped.objects
        result.dropped_small = skipped.small_objects
        if skipped.small_objects:
            log.warning(
                "evaluation left out %d object(s) below data.min_object_area=%s px at %d px "
                "(as training does)",
                skipped.small_objects,
                min_object_area,
                int(segmenter.image_size),
            )
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
        if not sys.stderr.isatty():  # a redrawn bar is one endless line in a file
            return LogProgress(total)
        return tqdm(total=total, unit="img", desc="evaluating", dynamic_ncols=True)

    # ------------------------------------------------------------------ protocols
    def run_batch(
        self,
        segmenter: Segmenter,
        batch: ObjectBatch,
        objects_per_decode: int | None,
        on_outcome: Callable[[str, Outcome], None],
    ) -> None:
        """Encode the batch's images once and run every protocol on its objects.

        This is the one definition of the protocols' numbers: ``samtune-eval`` and validation
        during training both call it. Everything runs outside autocast (float32), except the
        image encoder when ``encoder_precision`` is ``"bf16"``; see :class:`Evaluator`.

        Args:
            segmenter: the model (its embedding cache, if any, serves the encoder).
            batch: original-resolution samples and the objects to score.
            objects_per_decode: objects per decoder call (None: all in one call).
            on_outcome: called with ``(protocol, outcome)`` after each protocol, in order.
        """
        device = batch.img_idx.device
        with no_autocast():
            images = segmenter.preprocess([s.image for s in batch.samples]).to(device)
            with self._encoder_autocast(device):
                features = segmenter.encode(images)
            features = features.to(torch.float32)
            runner = ProtocolRunner(
                segmenter, features, batch, objects_per_decode=objects_per_decode
            )
            for protocol in self.protocols:
                on_outcome(protocol, runner.run(protocol, max_clicks=self.max_clicks))

    def _encoder_autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.encoder_precision == "bf16":
            return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _evaluate_batch(
        self,
        segmenter: Segmenter,
        batch: ObjectBatch,
        result: EvalResult,
        objects_per_decode: int | None,
    ) -> None:
        def record(protocol: str, outcome: Outcome) -> None:
            self._record(protocol, batch, outcome, result)

        self.run_batch(segmenter, batch, objects_per_decode, record)
        result.images += len(batch.samples)
        for sample in batch.samples:
            ignored = ignored_pixels(sample)
            result.ignored_pixels += ignored
            result.images_with_ignore += int(ignored > 0)
            result.scored_pixels += int(sample.image.shape[0] * sample.image.shape[1])

    # ------------------------------------------------------------------ bookkeeping
    def _record(
        self, protocol: str, batch: ObjectBatch, outcome: Outcome, result: EvalResult
    ) -> None:
        clicks_to: dict[str, list[int]] = {}
        curves: list[list[float]] | None = None
        if outcome.iou_per_click is not None:
            for t in self.noc_thresholds:
                clicks_to[threshold_key(t)] = number_of_clicks(outcome.iou_per_click, t).tolist()
            curves = outcome.iou_per_click.cpu().tolist()
        pred_iou = outcome.pred_iou.float().cpu().tolist()
        j = 0
        for image, (sample, keep, gt, pred) in enumerate(
            zip(batch.samples, batch.keep, batch.gts, outcome.preds, strict=True)
        ):
            ignore = batch.ignore_of(image)  # not labelled: in neither mask
            ious = mask_iou(pred, gt, ignore).tolist()
            dices = mask_dice(pred, gt, ignore).tolist()
            areas = np.count_nonzero(sample.masks[keep].reshape(len(keep), -1), axis=1).tolist()
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


CPU_DECODE_BYTES = 16 * 2**20
ACCELERATOR_DECODE_BYTES = 512 * 2**20


class LogProgress:
    """The evaluator's progress as log lines (about every tenth of the images), where a bar
    cannot redraw: ``evaluating: 40/120 images, 930 objects, 5.6 objects/s``."""

    def __init__(self, total: int | None) -> None:
        self.total, self.n = total, 0
        self._every = max(1, (total or 100) // 10)
        self._next = self._every
        self._due = False

    def update(self, n: int = 1) -> None:
        """Count ``n`` more images; a line is due when another tenth is done."""
        self.n += n
        if self.n >= self._next:
            self._next = (self.n // self._every + 1) * self._every
            self._due = True

    def set_postfix(self, objects: int = 0, obj_per_s: str = "?", **_: object) -> None:
        """Log the due line with these counts (called after each :meth:`update`)."""
        if self._due:
            self._due = False
            log.info(
                "evaluating: %d/%s images, %d objects, %s objects/s",
                self.n,
                self.total or "?",
                objects,
                obj_per_s,
            )

    def close(self) -> None:
        """Nothing to release."""


def cpu_decode_chunk(image_size: int) -> int:
    """Objects per decoder call on a CPU: as many as keep the upscaled mask features (``32 x
    S/4 x S/4`` float32 per object, the decoder's largest activation) within 16 MB, at least 1.

    That is 2 objects at 1024 px, 8 at 512 px and 32 at 256 px. Measured per object on this
    project's 2-core CPU (tiny, point1, one thread): at 1024 px 105 ms with 1 object per call,
    99 ms with 2, 110 ms with 3, 113 ms with 4 and over 200 ms with 8 or 16; at 256 px 9.5-13.6
    ms for any chunk from 1 to 16.
    """
    per_object = 32 * (image_size // 4) ** 2 * 4
    return max(1, CPU_DECODE_BYTES // per_object)


def accelerator_decode_chunk(image_size: int) -> int:
    """Objects per decoder call on an accelerator: as many as keep the upscaled mask features
    (``32 x S/4 x S/4`` float32 per object) within 512 MB, at least 1: 64 objects at 1024 px,
    256 at 512 px. This bounds memory, not speed: the number was not tuned on a GPU.
    """
    per_object = 32 * (image_size // 4) ** 2 * 4
    return max(1, ACCELERATOR_DECODE_BYTES // per_object)


def _class_name(sample: Sample, class_id: int) -> str:
    """The class's name from ``meta["class_names"]`` (keys int or str), else the id as text."""
    names = sample.meta.get("class_names") or {}
    return str(names.get(class_id, names.get(str(class_id), class_id)))


def _example(
    row: ObjectResult,
    image: np.ndarray,
    gt: torch.Tensor,
    pred: torch.Tensor,
    outcome: Outcome,
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


def is_volume_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a slice dataset of volumes (per-volume evaluation applies)."""
    return isinstance(dataset, VolumeSliceDataset)


def evaluate_dataset(
    evaluator: Evaluator,
    model: Any,
    dataset: Any,
    *,
    device: Any = "cpu",
    max_images: int | None = None,
    min_object_area: int | None = None,
) -> tuple[EvalResult, dict[str, Any] | None]:
    """Run ``evaluator`` on ``dataset``; on a volume dataset also score whole volumes.

    On a volume dataset the evaluator keeps its predicted masks for this run (whatever its
    ``keep_masks``), they are scored with :func:`volume_evaluation`, and then dropped from the
    rows unless the evaluator was set to keep them.

    Args:
        evaluator: the evaluator to run.
        model: the model to evaluate.
        dataset: Samples (any dataset the evaluator takes).
        device: where to run.
        max_images: stop after this many items (None: all).
        min_object_area: ``data.min_object_area`` (see :meth:`Evaluator.evaluate`), or None.

    Returns:
        ``(result, volumes)``; ``volumes`` is None unless ``dataset`` is a volume dataset.
    """
    run: dict[str, Any] = {"device": device, "max_images": max_images}
    if min_object_area is not None:  # duck-typed evaluators need not know it
        run["min_object_area"] = min_object_area
    if not is_volume_dataset(dataset):
        return evaluator.evaluate(model, dataset, **run), None
    keep = evaluator.keep_masks
    evaluator.keep_masks = True
    try:
        result = evaluator.evaluate(model, dataset, **run)
    finally:
        evaluator.keep_masks = keep
    volumes = volume_evaluation(result, dataset, evaluated_items=max_images)
    if not keep:
        for row in result.rows:
            row.mask = None  # scored; free the memory
    return result, volumes
