"""The LightningModule: wires the SAM 2.1 model, adapter, prompt simulator, loss and metrics."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import lightning as L
import numpy as np
import torch

from samtune import __version__
from samtune.data.drops import vanished_message
from samtune.evaluation.clicks import center_points
from samtune.evaluation.report.overlay import denormalize, object_overlays
from samtune.models.spec import ModelSpec
from samtune.prompts.sampling import mask_to_box
from samtune.prompts.streams import PromptStreams
from samtune.segmenter.cache import EmbeddingCache, encode_frozen
from samtune.segmenter.checkpointing import enable_activation_checkpointing, run_checkpointed
from samtune.segmenter.sam2 import Decoded, Features, decode, encode, upsample_logits
from samtune.training.distributed import mean_over_objects, sum_and_count
from samtune.training.optim import OptimConfig, param_groups, warmup_cosine_scheduler
from samtune.training.run_state import load_run_state, save_run_state

log = logging.getLogger(__name__)

VAL_PROTOCOLS = ("point1", "box")
LOSS_TERMS = ("loss", "focal", "dice", "iou", "object_score")


class SamTuneModule(L.LightningModule):
    """Fine-tunes a SAM 2.1 image model with simulated interactive prompts.

    Training follows SAM 2: an initial prompt (box or click) per object, then correction clicks from
    the error region of the previous prediction with its low-res logits fed back; the loss is summed
    over the prompt steps. Validation reports mIoU for the ``point1`` and ``box`` protocols at the
    model's input resolution; ``val/miou`` (their mean) picks the best checkpoint.

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
        self.best_metrics: dict[str, float] = {}
        self._val_sums: dict[str, list[float]] = defaultdict(list)
        self._overlays: list[np.ndarray] = []
        self._seen: dict[str, list[int]] = {"train": [0, 0, 0], "val": [0, 0, 0]}
        # --- speed and memory (docs/performance.md)
        self.embedding_cache = None if adapter.encoder_trainable else embedding_cache
        if activation_checkpointing and adapter.encoder_trainable:
            enable_activation_checkpointing(self.model)
        self.checkpoint_prompt_steps = bool(checkpoint_prompt_steps)
        if compile_encoder:
            self.model.image_encoder.compile(dynamic=False)

    # ----------------------------------------------------------------- forward pieces
    def encode_images(self, images: torch.Tensor) -> Features:
        """Image features; no graph through the encoder when the adapter leaves it frozen (then from
        the embedding cache, if there is one)."""
        if self.adapter.encoder_trainable:
            if torch.is_grad_enabled():
                return encode(self.model, images)
            with torch.no_grad():
                return encode(self.model, images)
        if self.embedding_cache is not None:
            return self.embedding_cache.encode(self.model, images)
        return encode_frozen(self.model, images)

    def _gather_objects(
        self, masks: list[torch.Tensor], generator: torch.Generator | PromptStreams | None
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
        gts, idx = [], []
        if generator is not None:
            masks = _streams(generator).select_objects(self.prompts, masks)
        for i, m in enumerate(masks):
            if m.shape[0] == 0:
                continue
            gts.append(m)
            idx.append(torch.full((m.shape[0],), i, dtype=torch.long, device=m.device))
        if not gts:
            return None, None
        return torch.cat(gts), torch.cat(idx)

    def interactive_loss(
        self,
        features: Features,
        gt: torch.Tensor,
        img_idx: torch.Tensor,
        generator: torch.Generator | PromptStreams,
    ) -> dict[str, torch.Tensor]:
        """SAM 2's interactive training loss for the objects ``gt`` (N x S x S bool).

        One decoder pass for the initial prompts, then one per correction click; every pass's loss
        terms are summed. The random prompts come from one generator, or from the batch's
        :class:`~samtune.prompts.PromptStreams` (one stream per image).
        """
        device = gt.device
        size = tuple(gt.shape[-2:])
        gt_cpu = gt.cpu()
        streams = _streams(generator)
        first = streams.initial(self.prompts, gt_cpu, img_idx)
        coords = None if first.point_coords is None else first.point_coords.to(device)
        labels = None if first.point_labels is None else first.point_labels.to(device)
        boxes = None if first.boxes is None else first.boxes.to(device)
        mask_input = None
        totals: dict[str, torch.Tensor] = {}
        steps = 1 + int(self.prompts.correction_clicks)
        for step in range(steps):
            multimask = bool(first.multimask and step == 0)
            out, terms = run_checkpointed(
                self._prompt_step,
                features,
                img_idx,
                coords,
                labels,
                boxes,
                mask_input,
                multimask,
                gt,
                enabled=self.checkpoint_prompt_steps,
            )
            for k, v in terms.items():
                totals[k] = totals[k] + v if k in totals else v
            if step + 1 == steps:
                break
            best_low, _ = out.best()
            pred = upsample_logits(best_low.detach(), size)[:, 0] > 0
            new_c, new_l = streams.correction(self.prompts, pred.cpu(), gt_cpu, img_idx)
            new_c, new_l = new_c.to(device), new_l.to(device)
            coords = new_c if coords is None else torch.cat([coords, new_c], 1)
            labels = new_l if labels is None else torch.cat([labels, new_l], 1)
            mask_input = best_low
        return totals

    def _prompt_step(
        self,
        features,
        img_idx,
        coords,
        labels,
        boxes,
        mask_input,
        multimask: bool,
        gt: torch.Tensor,
    ) -> tuple[Decoded, dict[str, torch.Tensor]]:
        """One decoder pass and its loss terms (a unit of prompt-step checkpointing)."""
        out = decode(
            self.model,
            features,
            img_idx,
            coords,
            labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask,
        )
        logits = upsample_logits(out.low_res_logits, tuple(gt.shape[-2:]))
        return out, self.loss_fn(logits, out.iou_pred, out.object_score_logits, gt)

    # ----------------------------------------------------------------- Lightning hooks
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
            gt, img_idx = self._gather_objects(batch["masks"], streams)
        if gt is None and world == 1:
            return None
        terms: dict[str, torch.Tensor] = {}
        if gt is not None:
            terms = self.interactive_loss(self.encode_images(batch["images"]), gt, img_idx, streams)
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

    @torch.no_grad()
    def protocol_predictions(
        self, features: Features, gt: torch.Tensor, img_idx: torch.Tensor, protocol: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted masks (N x S x S bool) and clicks for one evaluation protocol at input resolution."""
        size = tuple(gt.shape[-2:])
        if protocol == "point1":
            pts = center_points(gt.cpu()).to(gt.device)[:, None, :]
            lab = torch.ones(pts.shape[:2], dtype=torch.int32, device=gt.device)
            out = decode(self.model, features, img_idx, pts, lab, multimask_output=True)
            logits, _ = out.best()
            return upsample_logits(logits, size)[:, 0] > 0, pts
        if protocol == "box":
            boxes = mask_to_box(gt)
            out = decode(
                self.model, features, img_idx, None, None, boxes=boxes, multimask_output=False
            )
            return upsample_logits(out.low_res_logits, size)[:, 0] > 0, boxes.view(-1, 2, 2)
        raise ValueError(f"unknown validation protocol {protocol!r}; known: {VAL_PROTOCOLS}")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch is None:
            return
        self._count("val", batch)
        gt, img_idx = self._gather_objects(batch["masks"], None)
        if gt is None:
            return
        features = self.encode_images(batch["images"])
        for protocol in VAL_PROTOCOLS:
            pred, pts = self.protocol_predictions(features, gt, img_idx, protocol)
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
            self._val_sums[protocol].extend(iou.cpu().tolist())
            if protocol == "point1" and len(self._overlays) < self.num_overlays:
                self._add_overlays(batch, gt, pred, pts, img_idx)

    def _add_overlays(self, batch, gt, pred, pts, img_idx) -> None:
        i = int(img_idx[0])
        sel = (img_idx == i).nonzero().flatten().cpu()
        self._overlays += object_overlays(
            denormalize(batch["images"][i]),
            gt[sel].cpu().numpy(),
            pred[sel].cpu().numpy(),
            pts[sel].cpu().numpy(),
            limit=self.num_overlays - len(self._overlays),
        )

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._seen["val"] = [0, 0, 0]
        else:
            self._fail_if_nothing_seen("val")
        # the IoUs of all ranks (each val image is on exactly one), summed and counted once
        values = sum_and_count(
            self._val_sums,
            VAL_PROTOCOLS,
            reduce_sum=lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"),
            device=self.device,
        )
        values = {p: v for p, v in values.items() if not np.isnan(v)}
        if values:
            sync = self.trainer.world_size > 1  # values equal on every rank: a no-op mean
            for p, v in values.items():
                self.log(f"val/miou_{p}", v, prog_bar=True, sync_dist=sync)
            mean = float(np.nanmean(list(values.values())))
            self.log("val/miou", mean, prog_bar=True, sync_dist=sync)
            if not self.trainer.sanity_checking:
                if mean >= self.best_metrics.get("val/miou", -1.0):
                    self.best_metrics = {
                        "val/miou": mean,
                        **{f"val/miou_{p}": v for p, v in values.items()},
                    }
                self._log_overlays()
        self._val_sums.clear()
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
        total = int(self.trainer.estimated_stepping_batches) if self.trainer is not None else 1000
        scheduler = warmup_cosine_scheduler(
            optimizer,
            total_steps=total,
            warmup_fraction=cfg.warmup_fraction,
            min_lr_ratio=cfg.min_lr_ratio,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

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
        save_run_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        load_run_state(self, checkpoint)


def _streams(generator: torch.Generator | PromptStreams) -> PromptStreams:
    return generator if isinstance(generator, PromptStreams) else PromptStreams(generator)
