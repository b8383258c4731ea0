"""One served model: sam2's own ``SAM2ImagePredictor`` at the model's ``image_size``.

The encoder and the decoder each get their own predictor on the same weights, so a segment
call on a cached embedding never waits for another image's encoder run; each predictor is used
by one request at a time (requests on one model are serialised per half).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samtune.inference.predictor import fit_feature_sizes
from samtune.models.weights import is_none, load_model
from samtune.serving.cache import Embedding, tensor_bytes
from samtune.serving.prompts import PromptBatch

log = logging.getLogger(__name__)

# Roboflow's sam2_version_id for each SAM 2.1 size.
VERSION_IDS = {
    "sam2.1_hiera_tiny": "hiera_tiny",
    "sam2.1_hiera_small": "hiera_small",
    "sam2.1_hiera_base_plus": "hiera_b_plus",
    "sam2.1_hiera_large": "hiera_large",
}


@dataclass(frozen=True)
class Segmentation:
    """The best-scored mask of each prompt.

    Attributes:
        masks: ``N x H x W`` bool at the image's size.
        scores: ``N`` predicted IoU.
        low_res_logits: ``N x S/4 x S/4`` float32 logits (the decoder's own resolution).
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray


def resolve_weights_path(ckpt: str | os.PathLike | None) -> str | None:
    """``ckpt`` as a file: a folder written by ``samtune-export format=roboflow`` gives its ``model.pt``."""
    if is_none(ckpt):
        return None
    path = Path(ckpt).expanduser()
    if path.is_dir() and (path / "model.pt").is_file():
        return str(path / "model.pt")
    return str(path)


class ServedModel:
    """A SAM 2.1 model answering embed and segment calls.

    Args:
        version_id: the ``sam2_version_id`` that reaches it (None: from its size, ``hiera_tiny``...).
        model: the ``SAM2Base`` (moved to ``device``).
        info: what :func:`samtune.models.weights.load_model` says about the weights.
        device: where it runs.
    """

    def __init__(
        self,
        version_id: str | None,
        model: torch.nn.Module,
        info: dict[str, Any],
        *,
        device: str,
    ) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.version_id = version_id or VERSION_IDS[info["name"]]
        self.info = dict(info)
        self.device = str(device)
        model = model.to(device).eval()
        self.image_size = int(model.image_size)
        self._encoder = fit_feature_sizes(SAM2ImagePredictor(model))
        self._decoder = fit_feature_sizes(SAM2ImagePredictor(model))
        self._encode_lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self.encodes = 0

    @classmethod
    def load(
        cls,
        version_id: str | None,
        ckpt: str | os.PathLike | None,
        *,
        spec: Any = None,
        image_size: int | None = None,
        device: str = "cpu",
    ) -> ServedModel:
        """Load weights with samtune's loader (``.ckpt``, exported or official ``.pt``, or none).

        Args:
            version_id: the ``sam2_version_id`` that reaches the model (None: from its size).
            ckpt: a samtune Lightning ``.ckpt``, a ``.pt`` (exported, official), a folder from
                ``samtune-export format=roboflow``, or None for ``spec``'s own weights.
            spec: a :class:`~samtune.models.ModelSpec` (the size for ``ckpt=None``, or a check
                of the file's size).
            image_size: serve at this resolution instead of the recorded one.
            device: ``cpu``, ``cuda``, ``cuda:1``, ...
        """
        path = resolve_weights_path(ckpt)
        model, info = load_model(path, spec, image_size=image_size)
        return cls(version_id, model, info, device=device)

    def describe(self) -> dict[str, Any]:
        """Name, resolution, device and where the weights came from (for the info route)."""
        return {
            "sam2_version_id": self.version_id,
            "model": self.info.get("name"),
            "image_size": self.image_size,
            "device": self.device,
            "weights": self.info.get("checkpoint"),
            "adapter": self.info.get("adapter"),
            "random_init": bool(self.info.get("random_init", False)),
            "encodes": self.encodes,
        }

    def encode(self, image: np.ndarray) -> Embedding:
        """Run the image encoder on an ``H x W x 3`` uint8 RGB image, as ``set_image`` does."""
        with self._encode_lock:
            predictor = self._encoder
            try:
                predictor.set_image(image)
                features = predictor._features
                orig_hw = tuple(int(v) for v in predictor._orig_hw[0])
            finally:
                predictor.reset_predictor()
            self.encodes += 1
        return Embedding(features=features, orig_hw=orig_hw, nbytes=tensor_bytes(features))

    def segment(
        self, embedding: Embedding, prompts: PromptBatch, *, multimask_output: bool
    ) -> Segmentation:
        """``SAM2ImagePredictor.predict`` on a cached embedding, keeping each prompt's best mask."""
        with self._decode_lock:
            predictor = self._decoder
            predictor._features = embedding.features
            predictor._orig_hw = [embedding.orig_hw]
            predictor._is_batch = False
            predictor._is_image_set = True
            try:
                masks, scores, low_res = predictor.predict(
                    point_coords=prompts.point_coords,
                    point_labels=prompts.point_labels,
                    box=prompts.box,
                    multimask_output=multimask_output,
                )
            finally:
                predictor.reset_predictor()
        if masks.ndim == 3:  # predict drops the prompt axis when there is one prompt
            masks, scores, low_res = masks[None], scores[None], low_res[None]
        best = np.argmax(scores, axis=1)
        rows = np.arange(len(best))
        return Segmentation(
            masks=masks[rows, best] > 0.5,
            scores=scores[rows, best].astype(np.float32),
            low_res_logits=low_res[rows, best].astype(np.float32),
        )
