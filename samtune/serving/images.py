"""Decoding the request's image into the ``H x W x 3`` uint8 RGB array SAM 2 takes."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import pickle
from typing import Any

import numpy as np

from samtune.data.io import to_rgb_uint8
from samtune.serving.errors import ApiError

IMAGE_TYPES = ("base64", "url", "numpy")


def pixel_digest(image: np.ndarray) -> str:
    """The md5 of an image's RGB bytes (hex): the embedding cache's content key. Its first 12
    digits are the id Roboflow gives an image sent without ``image_id``."""
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


def image_id_of(image: np.ndarray) -> str:
    """The id Roboflow gives an image sent without ``image_id``: md5 of its RGB bytes, 12 hex digits."""
    return pixel_digest(image)[:12]


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


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as the file's header declares them, without decoding any pixel.

    Read by PIL's format plugins directly: ``Image.open`` itself refuses files declaring more
    than twice ``Image.MAX_IMAGE_PIXELS`` (a decompression-bomb guard) before their size can be
    read, and the server's own limit must be the one that answers. None when no format PIL
    knows accepts the header.
    """
    from PIL import Image

    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        if accept is not None and not accept(prefix):
            continue
        try:
            with factory(io.BytesIO(data), "") as img:
                width, height = img.size
        except Exception:  # noqa: BLE001 - a plugin that does not recognise the file
            continue
        return int(width), int(height)
    return None


def decode_image(ref: object, *, max_pixels: int, fetch: Any = None) -> np.ndarray:
    """The image of a request as ``H x W x 3`` uint8 RGB.

    ``base64`` (file bytes) and ``url`` (fetched by ``fetch``, only when the server allows the
    URL) are files: their size is read from the header and checked against ``max_pixels``
    before any decoding, then they are decoded with OpenCV as Roboflow's server does (EXIF
    orientation applied). ``numpy`` is Roboflow's array form: base64 of a pickled ``ndarray``
    (BGR, as OpenCV holds images) or of an ``.npy`` file; the pickle is read by a loader that
    builds nothing but numpy arrays. Grayscale, alpha and 16-bit images are converted by
    samtune's own rule (:func:`samtune.data.io.to_rgb_uint8`), as training and evaluation read
    them.

    Args:
        ref: the request's ``image`` (an :class:`~samtune.serving.schemas.ImageRef`) or None.
        max_pixels: the largest ``width * height`` accepted.
        fetch: ``fetch(url) -> bytes`` for ``type: url`` (None: URLs are refused).

    Raises:
        ApiError: 400 naming ``image``, ``image.type`` or ``image.value`` when the image is
            missing, not base64, not an image or not allowed; 413 when it has too many pixels.
    """
    import cv2

    if ref is None:
        raise ApiError(400, "image is required: {'type': 'base64', 'value': ...}", "image")
    kind = str(getattr(ref, "type", "base64")).lower()
    value = getattr(ref, "value", None)
    if kind not in IMAGE_TYPES:
        raise ApiError(
            400,
            f"image.type {kind!r} is not supported: use one of {', '.join(IMAGE_TYPES)}",
            "image.type",
        )
    if not isinstance(value, str) or not value:
        raise ApiError(
            400, f"image.value must be a non-empty string for type {kind!r}", "image.value"
        )
    if kind == "numpy":
        return _check_pixels(numpy_image(_b64decode(value)), max_pixels)
    if kind == "url":
        if fetch is None:
            raise ApiError(
                400,
                "image.type 'url' is off on this server: start it with allow_urls=[...] "
                "(URL prefixes it may fetch) or send the image as base64",
                "image.type",
            )
        data = fetch(value)
    else:
        data = _b64decode(value)
    size = declared_size(data)
    if size is None:
        raise ApiError(
            400,
            "image.value is not an image file this server reads (PNG, JPEG, TIFF, BMP, WebP, "
            "GIF, ...)",
            "image",
        )
    if size[0] * size[1] > max_pixels:
        raise ApiError(
            413,
            f"image declares {size[0]}x{size[1]} = {size[0] * size[1]} pixels, more than the "
            f"limit of {max_pixels}",
            "image",
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
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, [2, 1, 0, *range(3, array.shape[2])]]  # OpenCV's BGR(A) -> RGB(A)
    return _check_pixels(array, max_pixels)


def _check_pixels(array: np.ndarray, max_pixels: int) -> np.ndarray:
    if array.ndim < 2 or array.shape[0] * array.shape[1] > max_pixels:
        raise ApiError(
            413,
            f"image has {array.shape[0] * array.shape[1]} pixels, more than the limit of {max_pixels}",
            "image",
        )
    try:
        return to_rgb_uint8(array)
    except ValueError as exc:
        raise ApiError(400, f"image: {exc}", "image") from None


# what a pickled ndarray may refer to (numpy 1 and 2 spell the modules differently)
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles a numpy array and nothing else: any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")
        return super().find_class(module, name)


def numpy_image(data: bytes) -> np.ndarray:
    """The array of Roboflow's ``numpy`` image type (a pickled ``ndarray`` or an ``.npy`` file),
    BGR(A) channels turned to RGB(A).

    Raises:
        ApiError: 400 naming ``image.value`` when it is not a numeric image array.
    """
    try:
        if data[:6] == b"\x93NUMPY":
            array = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            array = _ArrayUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # noqa: BLE001 - anything the payload provokes is the client's
        raise ApiError(
            400, f"image.value is not a pickled numpy array or .npy file: {exc}", "image.value"
        ) from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "uif" or array.dtype.hasobject:
        raise ApiError(400, "image.value must hold a numeric numpy array", "image.value")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ApiError(
            400,
            f"image.value holds an array of shape {array.shape}; expected H x W or H x W x 1/3/4",
            "image.value",
        )
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = array[:, :, [2, 1, 0, *range(3, array.shape[2])]]
    return np.ascontiguousarray(array)
