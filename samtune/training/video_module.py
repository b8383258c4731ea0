"""``VideoModule``: Lightning training of SAM 2.1's memory path on clips (``training=video``).

A training step is :mod:`samtune.training.clip_step` on a batch of clips from a
:class:`~samtune.data.datamodules.clips.ClipDataModule`: SAM 2.1's video recipe, SAM 2's loss
summed over the frames and prediction steps. Which weights train is the adapter's choice
(``adapter.memory=true`` adds the memory attention, memory encoder, object-pointer projections
and no-object embeddings to what the encoder adapter trains).

Validation propagates masks: for each object, its ground-truth mask on the first annotated
frame where it is present goes to the official ``SAM2VideoPredictor`` (holding the weights being
trained), which tracks it to the end of the video. ``val/j_propagate_mask`` is the region J of
``samtune-eval``'s ``propagate_mask`` protocol (:mod:`samtune.evaluation.clips`, the same
functions): per object the mean J over the annotated frames after its prompt frame, at the
video's own resolution, averaged over the objects of a video, then over the videos. It picks
``best.ckpt``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torchmetrics import MaxMetric, MeanMetric

from samtune.evaluation.clips import propagate_objects, score_clip
from samtune.inference.predictor import build_video_model
from samtune.training.clip_step import (
    LOSS_TERMS,
    VideoRecipe,
    backbone_features,
    checkpoint_memory_attention,
    clip_loss,
    encode_clip_frames,
    flat_frames,
    generator_clicker,
    sample_plan,
    track_clip,
)
from samtune.training.module import SamTuneModule

log = logging.getLogger(__name__)

VAL_METRIC = "val/j_propagate_mask"


def clip_generator(seed: int, epoch: int, indices: list[int]) -> torch.Generator:
    """The random stream of one clip step, keyed by ``(seed, epoch, dataset indices)``."""
    key = int(seed) * 1_000_003 + int(epoch) * 7_919
    for i in indices:
        key = (key * 1_000_033 + int(i) + 1) % (2**62)
    return torch.Generator().manual_seed(key)


class VideoModule(SamTuneModule):
    """:class:`SamTuneModule` with clip steps (see the module docstring).

    Args:
        recipe: the video prompts (:class:`~samtune.training.clip_step.VideoRecipe`).
        memory_checkpointing: recompute the memory attention in the backward pass.
        **kwargs: those of :class:`SamTuneModule` (``prompts`` is not used by clip steps).
    """

    def __init__(
        self, *, recipe: VideoRecipe, memory_checkpointing: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.recipe = recipe
        self.memory_checkpointing = bool(memory_checkpointing)
        if self.memory_checkpointing:
            checkpoint_memory_attention(self.model)
        self.val_j = MeanMetric()
        self.val_j_best = MaxMetric(sync_on_compute=False)
        # a SAM2VideoPredictor for validation, kept out of the module tree (and the state dict)
        object.__setattr__(self, "_val_predictor", None)
        self._predictor_ready = False

    @property
    def best_metrics(self) -> dict[str, float]:
        return dict(self._best_metrics)

    @best_metrics.setter
    def best_metrics(self, metrics: dict[str, float]) -> None:
        self._best_metrics = {k: float(v) for k, v in metrics.items()}
        self.val_j_best.reset()
        if VAL_METRIC in self._best_metrics:
            self.val_j_best.update(self._best_metrics[VAL_METRIC])

    def _count(self, split: str, batch: dict) -> None:
        seen = self._seen[split]
        seen[0] += int(batch["frames"].shape[0])
        seen[1] += sum(int(m.shape[0]) for m in batch["masks"])
        seen[2] += sum(int(meta.get("dropped_small", 0)) for meta in batch["meta"])

    def clip_step(self, batch: dict, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """Loss terms of one batch of clips (None when it holds no object)."""
        masks = [m.to(self.device) for m in batch["masks"]]
        if not masks or sum(int(m.shape[0]) for m in masks) == 0:
            return None
        frames = batch["frames"].to(self.device)
        num_videos, num_frames = int(frames.shape[0]), int(frames.shape[1])
        objects = torch.cat(masks)  # N x T x S x S
        obj_video = torch.cat(
            [torch.full((int(m.shape[0]),), b, dtype=torch.long) for b, m in enumerate(masks)]
        ).to(self.device)
        annotated = batch["annotated"].to(self.device)
        supervised = annotated[obj_video].T  # T x N
        eligible = [int(t) for t in torch.nonzero(annotated.all(dim=0)).flatten().tolist() if t > 0]
        gt = [objects[:, t, None] for t in range(num_frames)]
        plan = sample_plan(self.recipe, gt, generator, eligible=eligible)
        images = flat_frames(frames)
        backbone_out = encode_clip_frames(
            self.model,
            images,
            encoder_frozen=not self.adapter.encoder_trainable,
            cache=self.embedding_cache,
        )
        outputs = track_clip(
            self.model,
            backbone_features(self.model, backbone_out),
            gt,
            obj_video,
            num_videos,
            plan,
            self.recipe,
            generator_clicker(self.recipe, generator),
        )
        return clip_loss(outputs, gt, self.loss_fn, supervised)

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if int(self.trainer.world_size) > 1:
            raise RuntimeError(
                "training=video runs in one process for now: set trainer.devices=1 "
                "(clip steps do not yet take part in the cross-rank object count)"
            )
        if batch is None:
            return None
        self._count("train", batch)
        indices = batch["indices"].tolist()
        terms = self.clip_step(batch, clip_generator(self.seed, int(self.current_epoch), indices))
        if terms is None:
            return None
        bs = int(batch["frames"].shape[0])
        for k in LOSS_TERMS:
            self.log(
                f"train/{k}",
                float(terms[k].detach()),
                on_step=True,
                on_epoch=True,
                prog_bar=k == "loss",
                batch_size=bs,
            )
        self.log(
            "train/objects", float(sum(int(m.shape[0]) for m in batch["masks"])), batch_size=bs
        )
        return terms["loss"]

    def _predictor(self) -> Any:
        """A ``SAM2VideoPredictor`` holding the weights being trained (adapter merged)."""
        if self._val_predictor is None:
            video = build_video_model(self.spec.name, image_size=int(self.spec.image_size))
            object.__setattr__(self, "_val_predictor", video)
        weights = self.adapter.merged_state_dict(self.model)
        self._val_predictor.load_state_dict(weights, strict=True)
        return self._val_predictor.to(self.device).eval()

    def on_validation_epoch_start(self) -> None:
        self._predictor_ready = False

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if batch is None:
            return
        if not getattr(self, "_predictor_ready", False):
            predictor = self._predictor()
            self._predictor_ready = True
        else:
            predictor = self._val_predictor
        seen = self._seen["val"]
        with torch.inference_mode():
            for clip in batch["samples"]:
                if clip is None:
                    continue
                # samtune-eval's propagate_mask protocol: J per object, then the video's mean
                tracks = score_clip(clip, propagate_objects(predictor, clip, "propagate_mask"))
                seen[0] += 1
                seen[1] += len(tracks)
                if tracks:
                    video_j = float(np.mean([np.mean(t.j) for t in tracks]))
                    self.val_j.update(torch.tensor([video_j], device=self.device))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._seen["val"] = [0, 0, 0]
        else:
            self._fail_if_nothing_seen("val")
        self.val_j.update(torch.zeros(0, device=self.device))
        value = float(self.val_j.compute())
        self.val_j.reset()
        if np.isnan(value):
            return
        self.log(VAL_METRIC, value, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        self.val_j_best.update(value)
        best = float(self.val_j_best.compute())
        if float(np.float32(value)) >= best:
            self._best_metrics = {VAL_METRIC: value}
        self.log(f"{VAL_METRIC}_best", self.val_j_best.compute())


def video_module_kwargs(cfg: Any) -> dict[str, Any]:
    """The :class:`VideoModule` arguments that ``training=video`` adds to the image ones."""
    from hydra.utils import instantiate

    speed = cfg.get("speed") or {}
    return {
        "recipe": instantiate(cfg.training.recipe),
        "memory_checkpointing": bool(speed.get("activation_checkpointing", False)),
    }
