"""The three answer formats of ``/sam2/segment_image``: polygons (``json``), COCO RLE, ``.npz``."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from samtune.serving.model import Segmentation

FORMATS = ("json", "rle", "binary")


def mask_polygons(mask: np.ndarray) -> list[list[list[int]]]:
    """The external contours of a bool mask as polygons of ``[x, y]`` pixels (``[[]]`` if empty)."""
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    polygons = [c.reshape(-1, 2).astype(int).tolist() for c in contours]
    return polygons or [[]]


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """A bool mask as COCO RLE ``{"size": [h, w], "counts": "<compressed string>"}``."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def json_predictions(result: Segmentation, fmt: str) -> list[dict[str, Any]]:
    """One prediction per prompt: ``{"masks": ..., "confidence": ..., "format": ...}``."""
    if fmt == "rle":
        encode, name = mask_rle, "rle"
    else:
        encode, name = mask_polygons, "polygon"
    return [
        {"masks": encode(mask), "confidence": float(score), "format": name}
        for mask, score in zip(result.masks, result.scores)
    ]


def npz_bytes(result: Segmentation) -> bytes:
    """``masks`` (N x H x W bool), ``low_res_masks`` (N x h x w logits) and ``confidence`` as ``.npz``."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        masks=result.masks,
        low_res_masks=result.low_res_logits,
        confidence=result.scores,
    )
    return buffer.getvalue()
