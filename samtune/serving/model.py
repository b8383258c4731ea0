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

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution logits (``image_size / 4``): the size of a
        ``mask_input``."""
        return self.image_size // 4

    def segment(
        self,
        embedding: Embedding,
        groups: list[PromptBatch],
        *,
        multimask_output: bool,
        mask_input: np.ndarray | None = None,
    ) -> Segmentation:
        """``SAM2ImagePredictor.predict`` on a cached embedding, one call per group of prompts,
        keeping each prompt's best mask; the answers in the request's order.

        Args:
            embedding: the image's embedding.
            groups: the request's prompts (:func:`~samtune.serving.prompts.prompt_groups`).
            multimask_output: three candidate masks per prompt (the best is kept).
            mask_input: ``N x h x w`` low-resolution logits of an earlier answer, one per
                prompt in request order (``h = w =`` :attr:`low_res_size`), or None.
        """
        count = sum(g.count for g in groups)
        h, w = embedding.orig_hw
        masks = np.zeros((count, h, w), bool)
        scores = np.zeros(count, np.float32)
        low = np.zeros((count, self.low_res_size, self.low_res_size), np.float32)
        with self._decode_lock:
            predictor = self._decoder
            for group in groups:
                rows = list(group.rows)
                predictor._features = embedding.features
                predictor._orig_hw = [embedding.orig_hw]
                predictor._is_batch = False
                predictor._is_image_set = True
                try:
                    m, sc, lr = predictor.predict(
                        point_coords=group.point_coords,
                        point_labels=group.point_labels,
                        box=group.box,
                        mask_input=None if mask_input is None else mask_input[rows, None],
                        multimask_output=multimask_output,
                    )
                finally:
                    predictor.reset_predictor()
                if m.ndim == 3:  # predict drops the prompt axis when there is one prompt
                    m, sc, lr = m[None], sc[None], lr[None]
                best = np.argmax(sc, axis=1)  # a tie goes to the first candidate
                take = np.arange(len(best))
                masks[rows] = m[take, best] > 0.5
                scores[rows] = sc[take, best]
                low[rows] = lr[take, best]
        return Segmentation(masks=masks, scores=scores, low_res_logits=low)
