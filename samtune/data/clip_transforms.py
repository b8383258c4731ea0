"""From a ``Clip`` at its own resolution to the model's input: ``T`` frames resized and
normalised, masks resized alike, the same augmentation on every frame.

The frames go through the image path's own steps (:func:`~samtune.data.transforms.resize_image`,
as ``SAM2ImagePredictor`` and SAM 2's training resize; then :func:`normalize_frames`), the masks
through :func:`~samtune.data.transforms.resize_masks`. Augmentations are those of
:class:`~samtune.data.transforms.SamTransform`, drawn once per clip and applied to every frame
and mask (SAM 2's ``consistent_transform: True``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from samtune.data.clip import Clip
from samtune.data.transforms import (
    SamTransform,
    augmentation_seed,
    kept_area,
    resize_image,
    resize_masks,
)
from samtune.segmenter.sam2 import normalize_images


def normalize_frames(frames: torch.Tensor) -> torch.Tensor:
    """``T x 3 x S x S`` frames (0..1) as the model family's normalised input.

    The one place clip frames are normalised: point it at the family's preprocessing.
    """
    return normalize_images(frames)


class ClipTransform(SamTransform):
    """Resize (and for training augment) a :class:`Clip` into the model's input.

    Order: resize, augment (the same draw for all frames), drop objects, normalise. An object is
    cleared on a frame where it keeps fewer than ``min_object_area`` pixels; in training an object
    left without pixels on the clip's first frame is dropped (it cannot be prompted there), in
    evaluation one left without pixels on every frame. Dropped objects are counted in
    ``meta["dropped_small"]``.

    Args: those of :class:`SamTransform`.

    Returns (when called on a ``Clip``):
        ``{"frames": float32 T x 3 x S x S normalised, "masks": bool N x T x S x S,
        "object_ids": int64 N, "class_ids": int64 N, "annotated": bool T, "meta": dict}``;
        ``meta`` is the clip's plus ``orig_size`` ``(H, W)`` and ``dropped_small``.
    """

    def __call__(self, clip: Clip, key: tuple[int, int] | None = None) -> dict[str, Any]:  # type: ignore[override]
        """The model input of ``clip``; ``key`` (``(epoch, dataset index)``) keys its
        augmentation as :class:`SamTransform` keys an image's."""
        t, height, width = clip.frames.shape[:3]
        n, size = clip.masks.shape[0], self.image_size
        frames = torch.stack([resize_image(frame, size) for frame in clip.frames])
        masks = resize_masks(clip.masks.reshape(n * t, height, width), size)
        if self.pipeline is not None:
            if key is not None:
                self.pipeline.set_random_seed(augmentation_seed(self.seed or 0, *key))
            frames, masks = self._augment_clip(frames, masks)
        masks = masks.reshape(n, t, size, size).copy()
        small = masks.reshape(n, t, -1).sum(axis=2) < kept_area(self.min_object_area)
        masks[small] = False
        present = ~small
        keep = present[:, 0] if self.train else present.any(axis=1)
        meta = {
            **clip.meta,
            "orig_size": (int(height), int(width)),
            "dropped_small": int((~keep).sum()),
        }
        return {
            "frames": normalize_frames(frames),
            "masks": torch.from_numpy(np.ascontiguousarray(masks[keep])),
            "object_ids": torch.as_tensor(clip.object_ids[keep], dtype=torch.int64),
            "class_ids": torch.as_tensor(clip.class_ids[keep], dtype=torch.int64),
            "annotated": torch.as_tensor(clip.annotated, dtype=torch.bool),
            "meta": meta,
        }

    def _augment_clip(
        self, frames: torch.Tensor, masks: np.ndarray
    ) -> tuple[torch.Tensor, np.ndarray]:
        images = np.ascontiguousarray(frames.permute(0, 2, 3, 1).numpy())
        if masks.shape[0]:
            out = self.pipeline(images=images, masks=masks.astype(np.uint8))
            masks = np.asarray(out["masks"]).astype(bool)
        else:
            out = self.pipeline(images=images)
        augmented = torch.from_numpy(np.ascontiguousarray(np.asarray(out["images"])))
        return augmented.permute(0, 3, 1, 2).float(), masks
