"""Shared pieces of the serving tests: the official predictor and a PNG of the blob image."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np

from samtune.serving import Limits

SAM2_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
KEY = "secret-key"
POINTS = [[{"x": 60, "y": 40, "positive": True}], [{"x": 20, "y": 80, "positive": True}]]
# Roboflow boxes: centre x, y and width, height
BOXES = [
    {"x": 60, "y": 45, "width": 50, "height": 40},
    {"x": 30, "y": 60, "width": 40, "height": 50},
]
LIMITS = Limits(
    max_body_bytes=2**20, max_image_pixels=20_000, max_prompts=4, max_points_per_prompt=8
)


def official_predictor(checkpoint: Path, image_size: int):
    """sam2's own ``build_sam2`` + ``SAM2ImagePredictor`` on ``checkpoint`` at ``image_size``.

    The feature sizes the predictor hard-codes for 1024 px are set for ``image_size`` here
    (strides 4, 8, 16), without samtune.
    """
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    GlobalHydra.instance().clear()
    initialize_config_module("sam2", version_base="1.2")
    try:
        model = build_sam2(
            SAM2_CONFIG,
            str(checkpoint),
            device="cpu",
            hydra_overrides_extra=[f"++model.image_size={image_size}"],
        )
    finally:
        GlobalHydra.instance().clear()
    predictor = SAM2ImagePredictor(model)
    s = image_size
    predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return predictor


def best_masks(predictor, image: np.ndarray, **prompts) -> tuple[np.ndarray, np.ndarray]:
    """What the server must answer: per prompt, the official best-scored mask and its score."""
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(**prompts)
    if masks.ndim == 3:
        masks, scores = masks[None], scores[None]
    best = scores.argmax(axis=1)
    rows = np.arange(len(best))
    return masks[rows, best] > 0.5, scores[rows, best]


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` (RGB) as PNG file bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def b64_image(data: bytes) -> dict:
    """The request's ``image`` field for file bytes."""
    return {"type": "base64", "value": base64.b64encode(data).decode("ascii")}


def rle_to_mask(rle: dict) -> np.ndarray:
    """A COCO RLE answer back to a bool mask."""
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def post(url: str, route: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}{route}?api_key={KEY}", json=body, timeout=60, **kwargs)


def client(url: str, key: str = KEY):
    from inference_sdk import InferenceHTTPClient

    return InferenceHTTPClient(api_url=url, api_key=key)
