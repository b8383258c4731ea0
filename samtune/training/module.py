"""The LightningModule: wires the segmenter, adapter, prompt simulator, loss and metrics.

The model itself is torch only: :class:`~samtune.segmenter.sam2.Sam2Segmenter` encodes and
decodes, :mod:`samtune.training.interactive` runs the interactive loss, and validation runs the
evaluation protocols of :mod:`samtune.evaluation.protocols`. This module keeps Lightning's
hooks, logging and the validation metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torchmetrics import MaxMetric, MeanMetric

from samtune import __version__
from samtune.data.drops import vanished_message
from samtune.evaluation.batching import ObjectBatch, SkipCounter, object_batches
from samtune.evaluation.evaluator import Evaluator
from samtune.evaluation.protocols import Outcome, object_ious
from samtune.evaluation.report.overlay import object_overlays
from samtune.models.spec import ModelSpec
from samtune.prompts.streams import PromptStreams
from samtune.segmenter.base import Features
from samtune.segmenter.cache import EmbeddingCache
from samtune.segmenter.sam2 import Sam2Segmenter
from samtune.training.distributed import mean_over_objects
from samtune.training.interactive import gather_objects, interactive_loss, object_ignore
from samtune.training.optim import (
    OptimConfig,
    ScheduleLength,
    param_groups,
    resumed_schedule,
    warmup_cosine_scheduler,
)
from samtune.training.run_state import load_run_state, save_run_state

log = logging.getLogger(__name__)

VAL_PROTOCOLS = ("point1", "box")
LOSS_TERMS = ("loss", "focal", "dice", "iou", "object_score")


class SamTuneModule(L.LightningModule):
    """Fine-tunes a SAM 2.1 image model with simulated interactive prompts.

    Training follows SAM 2 (:func:`samtune.training.interactive.interactive_loss`): an initial
    prompt (box or click) per object, then correction clicks from the error region of the previous
    prediction with its low-res logits fed back; the loss is summed over the prompt steps.
    Validation is evaluation: the val split's samples at their original resolution go through
    :meth:`samtune.evaluation.Evaluator.run_batch`, the code ``samtune-eval`` runs (the same
    preprocessing, prompts, float32 decoder and mask choice, object filter and resolution), for
    the protocols of ``val_evaluator`` (``point1`` and ``box`` by default); their mIoU over the
    objects of all ranks (torchmetrics) is ``val/miou_<protocol>``, ``val/miou`` (their mean)
    picks the best checkpoint, and ``val/miou_best`` is the best so far. For the weights of a
    validation, ``samtune-eval`` on the same split gives the same numbers.

    The official model is ``self.model`` (state-dict keys ``model.<sam2 key>``); ``self.segmenter``
    (:class:`~samtune.segmenter.sam2.Sam2Segmenter`) is a view of it that encodes and decodes.

    Args:
        model: which SAM 2.1 model and checkpoint.
        adapter: ``samtune.models.adapters`` adapter deciding what trains.
        prompts: ``samtune.prompts.PromptSimulator``.
        loss: ``samtune.training.loss.SAM2Loss``.
        optim: optimiser settings.
        seed: seeds the prompt simulation (each step derives its own generator from it).
        num_overlays: validation overlays logged per epoch.
        run_info: free-form description saved into checkpoints (data, config, adapter config).
        embedding_cache: ``samtune.segmenter.cache.EmbeddingCache`` used when the adapter leaves the encoder
            frozen (training and validation); ignored otherwise.
        activation_checkpointing: checkpoint every Hiera block when the encoder trains.
        checkpoint_prompt_steps: checkpoint each prompt step (decoder pass + loss) in training.
        compile_encoder: ``torch.compile`` the image encoder (static shapes).
        val_evaluator: the evaluator whose protocols and settings validation runs (built from
            the ``evaluation`` config with the ``validation.protocols``); None: ``point1`` and
            ``box`` with the evaluator's defaults.
    """

    def __init__(
        self,
        *,
        model: ModelSpec,
        adapter: Any,
        prompts: Any,
        loss: torch.nn.Module,
        optim: OptimConfig,
        seed: int = 0,
        num_overlays: int = 4,
        run_info: dict | None = None,
        embedding_cache: EmbeddingCache | None = None,
        activation_checkpointing: bool = False,
        checkpoint_prompt_steps: bool = False,
        compile_encoder: bool = False,
        val_evaluator: Evaluator | None = None,
    ) -> None:
        super().__init__()
        self.spec = model
        self.model = model.build().train()
        self.adapter = adapter
        self.adapter.apply(self.model)
        self.prompts = prompts
        self.loss_fn = loss
        self.optim_cfg = optim
        self.seed = int(seed)
        self.num_overlays = int(num_overlays)
        self.run_info = dict(run_info or {})
        self.param_report = adapter.parameter_report(self.model)
        # the segmenter is a view of ``self.model``, kept out of the module tree: the state-dict
        # keys stay ``model.<sam2 key>`` (checkpoints, export and small checkpoints read them)
        segmenter = Sam2Segmenter(
            self.model,
            embedding_cache=None if adapter.encoder_trainable else embedding_cache,
            activation_checkpointing=activation_checkpointing and adapter.encoder_trainable,
            compile_encoder=compile_encoder,
        )
        object.__setattr__(self, "segmenter", segmenter)
        self.checkpoint_prompt_steps = bool(checkpoint_prompt_steps)
        self.val_evaluator = val_evaluator or Evaluator(
            protocols=VAL_PROTOCOLS, progress=False, gallery_size=0
        )
        self.val_min_object_area: int | None = None  # the datamodule's, set in ``setup``
        # --- metrics: the states are not in the state dict; torchmetrics syncs them over ranks
        self.val_miou = torch.nn.ModuleDict({p: MeanMetric() for p in self.val_evaluator.protocols})
        self.val_miou_best = MaxMetric(sync_on_compute=False)  # its input is synced already
        self._best_metrics: dict[str, float] = {}
        self._overlays: list[np.ndarray] = []
        self._seen: dict[str, list[int]] = {"train": [0, 0, 0], "val": [0, 0, 0]}
        # the learning-rate schedule's length: this run's (set by ``configure_optimizers``), the
        # one a resumed checkpoint records, and the step it resumes at
        self._lr_length: ScheduleLength | None = None
        self._run_length: ScheduleLength | None = None
        self._resumed: tuple[ScheduleLength | None, int] | None = None
        self._resumed_lr_pending = False

    # ----------------------------------------------------------------- model pieces
    @property
    def embedding_cache(self) -> EmbeddingCache | None:
        """The segmenter's embedding cache (None while the encoder trains or without one)."""
        return self.segmenter.embedding_cache

    @embedding_cache.setter
    def embedding_cache(self, cache: EmbeddingCache | None) -> None:
        self.segmenter.embedding_cache = cache

    @property
    def best_metrics(self) -> dict[str, float]:
        """``val/miou`` and the per-protocol mIoUs of the best validation so far (empty before)."""
        return dict(self._best_metrics)

    @best_metrics.setter
    def best_metrics(self, metrics: dict[str, float]) -> None:
        """Restore the best values (from a checkpoint being resumed)."""
        self._best_metrics = {k: float(v) for k, v in metrics.items()}
        self.val_miou_best.reset()
        if "val/miou" in self._best_metrics:
            self.val_miou_best.update(self._best_metrics["val/miou"])

    def encode_images(self, images: torch.Tensor) -> Features:
        """The segmenter's features of normalised images (see ``Sam2Segmenter.encode``)."""
        return self.segmenter.encode(images)

    def gather_objects(
        self, masks: list[torch.Tensor], generator: torch.Generator | PromptStreams | None
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        """The batch's objects as the prompt simulator caps them (see ``interactive.gather_objects``)."""
        return gather_objects(masks, self.prompts, generator)

    def interactive_loss(
        self,
        features: Features,
        gt: torch.Tensor,
        img_idx: torch.Tensor,
        generator: torch.Generator | PromptStreams,
        ignore: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """:func:`samtune.training.interactive.interactive_loss` with this run's parts
        (``ignore``: each object's ``N x S x S`` not-labelled pixels, or None)."""
        return interactive_loss(
            self.segmenter,
            features,
            gt,
            img_idx,
            generator,
            prompts=self.prompts,
            loss_fn=self.loss_fn,
            checkpoint_steps=self.checkpoint_prompt_steps,
            ignore=ignore,
        )

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str) -> None:
        """Take the datamodule's ``min_object_area``: validation leaves out the objects that
        evaluation leaves out."""
        datamodule = getattr(self.trainer, "datamodule", None)
        area = getattr(datamodule, "min_object_area", None)
        self.val_min_object_area = None if area is None else int(area)

    def on_fit_start(self) -> None:
        r = self.param_report
        pct = 100.0 * r["trainable"] / max(1, r["total"])
        msg = (
            f"{self.spec.name} @ {self.spec.image_size}px, adapter={self.adapter.name}: "
            f"{r['trainable']:,} trainable of {r['total']:,} parameters ({pct:.2f}%)"
        )
        if self.trainer.is_global_zero:
            log.info(msg)
        if self.logger is not None:
            self.logger.log_hyperparams(
                {"params/trainable": r["trainable"], "params/total": r["total"]}
            )

    def on_train_start(self) -> None:
        """A resumed run: the learning rate of the resumed step from the schedule it follows now
        (the optimiser's restored one came from the recorded schedule)."""
        if not self._resumed_lr_pending:
            return
        self._resumed_lr_pending = False
        for config in self.trainer.lr_scheduler_configs:
            sched = config.scheduler
            if not isinstance(sched, torch.optim.lr_scheduler.LambdaLR):
                continue
            factors = [fn(sched.last_epoch) for fn in sched.lr_lambdas]
            for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, factors):
                group["lr"] = base * factor
            sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]

    def _count(self, split: str, batch: dict) -> None:
        """Tally images, kept objects and objects the transform dropped in this epoch."""
        seen = self._seen[split]
        seen[0] += len(batch["masks"])
        seen[1] += sum(int(m.shape[0]) for m in batch["masks"])
        seen[2] += sum(int(meta.get("dropped_small", 0)) for meta in batch["meta"])

    def _fail_if_nothing_seen(self, split: str) -> None:
        """Stop the run when no object of ``split`` survived resizing in a whole epoch."""
        images, objects, dropped = self._seen[split]
        self._seen[split] = [0, 0, 0]
        if images and not objects:
            raise RuntimeError(vanished_message(split, dropped, images, self.spec.image_size))

    def prompt_streams(self, batch: dict, batch_idx: int) -> PromptStreams:
        """The batch's random prompt streams: keyed by ``(seed, epoch, dataset index)`` per image
        when the batch carries ``indices`` (so the prompts of an image do not depend on its batch
        or rank), else one generator keyed by ``(seed, global step)``."""
        if batch.get("indices") is not None:
            return PromptStreams.keyed(
                seed=self.seed,
                epoch=int(self.current_epoch),
                batch_index=int(batch_idx),
                indices=batch["indices"].tolist(),
            )
        return PromptStreams(
            torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        )

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        world = int(self.trainer.world_size)
        gt = img_idx = streams = None
        if batch is not None:
            self._count("train", batch)
            streams = self.prompt_streams(batch, batch_idx)
            gt, img_idx = self.gather_objects(batch["masks"], streams)
        if gt is None and world == 1:
            return None
        terms: dict[str, torch.Tensor] = {}
        if gt is not None:
            ignore = object_ignore(batch.get("ignore"), img_idx)
            terms = self.interactive_loss(
                self.encode_images(batch["images"]), gt, img_idx, streams, ignore
            )
        # every rank takes part in the reduction, also one whose batch has no object
        loss, means, total = mean_over_objects(
            terms,
            0 if gt is None else int(gt.shape[0]),
            reduce_sum=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"),
            world_size=world,
            names=LOSS_TERMS,
            device=self.device,
        )
        if total == 0:
            return None  # no object on any rank: every rank skips the step
        # the values are the same on every rank already; sync_dist only averages the epoch means
        bs, sync = (1 if batch is None else batch["images"].shape[0]), world > 1
        for k, v in means.items():
            self.log(
                f"train/{k}",
                float(v),
                on_step=True,
                on_epoch=True,
                prog_bar=(k == "loss"),
                batch_size=bs,
                sync_dist=sync,
            )
        self.log("train/objects", float(total), on_step=True, batch_size=bs)
        if loss is None:  # DDP needs a backward on every rank: a zero one through each weight
            loss = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return loss

    def on_train_epoch_end(self) -> None:
        self._fail_if_nothing_seen("train")
        cache = self.embedding_cache
        if cache is None:
            return
        self.log("cache/hit_rate", cache.stats.hit_rate, sync_dist=True)
        if self.current_epoch >= 1 and cache.stats.hits == 0:
            log.warning(
                "embedding cache: no hit after %d epochs; augmentations that change pixels make "
                "every image new (see docs/performance.md): turn them off or drop the cache",
                self.current_epoch + 1,
            )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Score the batch's original-resolution samples with the evaluator's protocols."""
        if batch is None:
            return
        samples = batch["samples"]
        skipped = SkipCounter()
        segmenter = self.segmenter
        image_batch, chunk = self.val_evaluator.settings_for(segmenter, self.device)
        objects = 0
        with torch.no_grad(), self._exact_embedding_cache():
            batches = object_batches(
                samples,
                image_batch=image_batch,
                device=self.device,
                skipped=skipped,
                min_object_area=self.val_min_object_area,
                image_size=int(segmenter.image_size),
            )
            for objs in batches:
                objects += int(objs.img_idx.numel())

                def update(protocol: str, outcome: Outcome, objs: ObjectBatch = objs) -> None:
                    self.val_miou[protocol].update(object_ious(objs, outcome.preds))
                    if protocol == "point1" and len(self._overlays) < self.num_overlays:
                        self._add_overlays(objs, outcome)

                self.val_evaluator.run_batch(segmenter, objs, chunk, update)
        seen = self._seen["val"]
        seen[0] += sum(s is not None for s in samples)
        seen[1] += objects
        seen[2] += skipped.small_objects

    @contextlib.contextmanager
    def _exact_embedding_cache(self):
        """The embedding cache serves validation only when it stores the encoder's float32
        output exactly; a bf16 or fp16 cache would move the numbers away from ``samtune-eval``'s
        (which encodes every image anew), so validation encodes without it then."""
        cache = self.segmenter.embedding_cache
        lossy = cache is not None and cache.storage_dtype != torch.float32
        if lossy:
            self.segmenter.embedding_cache = None
        try:
            yield
        finally:
            if lossy:
                self.segmenter.embedding_cache = cache

    def _add_overlays(self, objs: ObjectBatch, outcome: Outcome) -> None:
        sample, gt, pred = objs.samples[0], objs.gts[0], outcome.preds[0]
        pts = None if outcome.points is None else outcome.points[: len(gt)]
        self._overlays += object_overlays(
            sample.image,
            gt.cpu().numpy(),
            pred.cpu().numpy(),
            None if pts is None else pts.cpu().numpy(),
            limit=self.num_overlays - len(self._overlays),
        )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._seen["val"] = [0, 0, 0]
        else:
            self._fail_if_nothing_seen("val")
        values = {}
        for protocol, metric in self.val_miou.items():
            metric.update(torch.zeros(0, device=self.device))  # a rank without objects adds none
            value = float(metric.compute())  # the mean over the objects of all ranks
            metric.reset()
            if not np.isnan(value):
                values[protocol] = value
        if values:
            sync = self.trainer.world_size > 1  # values equal on every rank: a no-op mean
            for p, v in values.items():
                self.log(f"val/miou_{p}", v, prog_bar=True, sync_dist=sync)
            mean = float(np.nanmean(list(values.values())))
            self.log("val/miou", mean, prog_bar=True, sync_dist=sync)
            if not self.trainer.sanity_checking:
                self.val_miou_best.update(mean)
                best = float(self.val_miou_best.compute())  # float32, as the metric keeps it
                if float(np.float32(mean)) >= best:  # a tie goes to the later epoch
                    self._best_metrics = {
                        "val/miou": mean,
                        **{f"val/miou_{p}": v for p, v in values.items()},
                    }
                self.log("val/miou_best", self.val_miou_best.compute(), sync_dist=sync)
                self._log_overlays()
        self._overlays.clear()

    def _log_overlays(self) -> None:
        loggers = self.loggers or []
        for lg in loggers:
            if hasattr(lg, "log_image") and self._overlays:
                lg.log_image(
                    key="val/overlays", images=list(self._overlays), step=int(self.global_step)
                )

    def configure_optimizers(self) -> dict:
        cfg = self.optim_cfg
        groups = param_groups(
            self.model,
            lr=cfg.lr,
            encoder_lr_scale=float(getattr(self.adapter, "encoder_lr_scale", 1.0)),
            weight_decay=cfg.weight_decay,
        )
        optimizer = torch.optim.AdamW(groups, betas=tuple(cfg.betas))
        total = self.trainer.estimated_stepping_batches if self.trainer is not None else 1000
        if not math.isfinite(total):
            raise ValueError(
                "the warm-up + cosine schedule needs a known number of steps: set "
                "trainer.max_epochs or trainer.max_steps (the run has neither)"
            )
        self._run_length = ScheduleLength.of(int(total), cfg.warmup_fraction)
        self._lr_length = ScheduleLength(**self._run_length.as_record())
        self._fit_resumed_schedule()
        scheduler = warmup_cosine_scheduler(
            optimizer, min_lr_ratio=cfg.min_lr_ratio, length=self._lr_length
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _fit_resumed_schedule(self) -> None:
        """Set the schedule's length of a resumed run (``optim.on_resume_length_change``), once
        both the checkpoint's record and this run's length are known (in either order)."""
        if self._resumed is None or self._run_length is None or self._lr_length is None:
            return
        recorded, step = self._resumed
        self._resumed = None
        length, message = resumed_schedule(
            recorded,
            self._run_length,
            policy=self.optim_cfg.on_resume_length_change,
            step=step,
            min_lr_ratio=self.optim_cfg.min_lr_ratio,
        )
        # in place: the scheduler reads it at every step
        self._lr_length.total_steps = length.total_steps
        self._lr_length.warmup_steps = length.warmup_steps
        self._resumed_lr_pending = True
        if message and (self.trainer is None or self.trainer.is_global_zero):
            log.warning(message)

    def on_save_checkpoint(self, checkpoint: dict) -> None:

        checkpoint["samtune"] = {
            "model": {
                "name": self.spec.name,
                "image_size": int(self.spec.image_size),
                "checkpoint": self.spec.resolved_checkpoint,
                "random_init": bool(self.spec.random_init),
            },
            "adapter": self.run_info.get("adapter", {}),
            "data": self.run_info.get("data", ""),
            "metrics": dict(self.best_metrics),
            "version": __version__,
            "config": self.run_info.get("config", {}),
        }
        if self._lr_length is not None:
            checkpoint["samtune"]["schedule"] = self._lr_length.as_record()
        save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_run_state(self, checkpoint)
        if "optimizer_states" in checkpoint:  # resuming training, not only reading weights
            meta = checkpoint.get("samtune") or {}
            recorded = ScheduleLength.from_record(meta.get("schedule"))
            self._resumed = (recorded, int(checkpoint.get("global_step", 0)))
            self._fit_resumed_schedule()
