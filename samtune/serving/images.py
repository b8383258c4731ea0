"""Decoding the request's image into the ``H x W x 3`` uint8 RGB array SAM 2 takes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io

import numpy as np

from samtune.data.io import to_rgb_uint8
from samtune.serving.errors import ApiError


def image_id_of(image: np.ndarray) -> str:
    """The id Roboflow gives an image sent without ``image_id``: md5 of its RGB bytes, 12 hex digits."""
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()[:12]


def _b64decode(value: str) -> bytes:
    if value.startswith("data:") and "," in value[:100]:
        value = value.split(",", 1)[1]  # a data URL: data:image/png;base64,....
    value = "".join(value.split())  # line breaks some encoders insert
    value = value.replace("-", "+").replace("_", "/")  # the URL-safe alphabet too
    value += "=" * (-len(value) % 4)  # missing padding, as some clients send
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"image.value is not valid base64: {exc}", "image.value") from None
    if not data:
        raise ApiError(400, "image.value decodes to no bytes", "image.value")
    return data


def _header_pixels(data: bytes) -> int | None:
    """Width x height from the file header (no decoding), or None if PIL cannot tell."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # PIL raises many types; the decoder below reports unreadable files
        return None
    return int(width) * int(height)


def decode_image(ref: object, *, max_pixels: int) -> np.ndarray:
    """The image of a request as ``H x W x 3`` uint8 RGB.

    The bytes are decoded with OpenCV as Roboflow's server does (EXIF orientation applied);
    grayscale, alpha and 16-bit images are converted by samtune's own rule
    (:func:`samtune.data.io.to_rgb_uint8`), as training and evaluation read them.

    Args:
        ref: the request's ``image`` (an :class:`~samtune.serving.schemas.ImageRef`) or None.
        max_pixels: the largest ``width * height`` accepted.

    Raises:
        ApiError: 400 naming ``image``, ``image.type`` or ``image.value`` when the image is
            missing, not base64, not a decodable image or has too many pixels.
    """
    import cv2

    if ref is None:
        raise ApiError(400, "image is required: {'type': 'base64', 'value': ...}", "image")
    kind = str(getattr(ref, "type", "base64")).lower()
    if kind != "base64":
        raise ApiError(
            400,
            f"image.type {kind!r} is not supported: this server takes only 'base64' "
            "(it does not fetch URLs or unpickle arrays)",
            "image.type",
        )
    value = getattr(ref, "value", None)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "image.value must be a non-empty base64 string", "image.value")
    data = _b64decode(value)
    pixels = _header_pixels(data)
    if pixels is not None and pixels > max_pixels:
        raise ApiError(
            413, f"image has {pixels} pixels, more than the limit of {max_pixels}", "image"
        )
    try:
        array = cv2.imdecode(
            np.frombuffer(data, np.uint8), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR
        )
    except cv2.error:
        array = None
    if array is None or array.size == 0:
        raise ApiError(
            400, "image.value is not an image OpenCV can decode (PNG, JPEG, TIFF, ...)", "image"
        )
    if array.shape[0] * array.shape[1] > max_pixels:
        raise ApiError(
            413,
            f"image has {array.shape[0] * array.shape[1]} pixels, more than the limit of {max_pixels}",
            "image",
        )
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # OpenCV's BGR -> RGB
    try:
        return to_rgb_uint8(array)
    except ValueError as exc:
        raise ApiError(400, f"image: {exc}", "image") from None
