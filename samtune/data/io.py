"""Reading images and label maps from disk into the arrays a ``Sample`` holds.

Every failure becomes a :class:`~samtune.data.sample.DataError` whose message starts with the
path, so a bad file is always named.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from samtune.data.sample import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif") + TIFF_SUFFIXES
LABEL_SUFFIXES = (".png", ".bmp", ".gif") + TIFF_SUFFIXES
NEEDS_IMAGECODECS = re.compile(r"<COMPRESSION\.(\w+): \d+> requires the 'imagecodecs' package")
LOSSY_TIFF_COMPRESSIONS = ("JPEG", "OJPEG", "JPEG2000", "JPEGXL", "WEBP", "JPEGXR")
ROBUST_PERCENTILES = (0.5, 99.5)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as ``H x W x 3`` uint8 RGB.

    PNG, JPEG, BMP and GIF (its first frame) are read with PIL (pixels as stored: no EXIF
    rotation, so masks stay aligned), TIFF with tifffile, whatever its compression (none, LZW,
    Deflate, PackBits, JPEG, ...: the ``imagecodecs`` package decodes those tifffile cannot
    alone). Conversions:

    - grayscale (and single-channel TIFF) is replicated to three channels; a grey+alpha image
      keeps its grey channel; RGBA drops the alpha channel; a palette image (PNG, GIF, TIFF)
      becomes the RGB colours of its palette;
    - uint8 data is kept as is; any other type (16-bit, 32-bit, float, also 16-bit RGB PNG) is
      rescaled to 0..255 linearly between its robust minimum and maximum, the 0.5 and 99.5
      percentiles over all pixels and channels together (so colour balance is kept), values
      outside are clipped. If those percentiles are equal (e.g. a sparse image that is mostly 0)
      the true minimum and maximum are used instead; a constant image becomes all zeros.
      Non-finite values (NaN, inf) count as the minimum.

    Args:
        path: image file.

    Returns:
        The image, ``H x W x 3`` uint8.

    Raises:
        DataError: ``"<path>: cannot read image: <reason>"`` when the file is missing, corrupt,
            not a 2-D image with 1-4 channels, or compressed in a way no installed codec
            decodes (the reason names the compression and the package).
    """
    path = Path(path)
    try:
        is_tiff = path.suffix.lower() in TIFF_SUFFIXES
        array = _read_tiff(path, colours=True) if is_tiff else _read_pil_image(path)
        return to_rgb_uint8(array)
    except DataError:
        raise
    except Exception as err:  # any decoder failure is a bad file, reported with its name
        raise DataError(f"{path}: cannot read image: {_reason(err)}") from err


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a label map (PNG, BMP, GIF or TIFF) as an ``H x W`` int64 array.

    8-bit, 16-bit and 32-bit integer maps are read as they are; palette images (PNG, GIF,
    TIFF) give their palette indices, not their colours (a palette of greys only, as a GIF
    stores a grayscale mask, gives the grey levels); a float TIFF is accepted only if it
    holds whole numbers. A TIFF compressed with a lossy codec (JPEG, WebP, ...) is refused: its
    values are not the labels that were saved. A three-channel map whose
    channels are equal is read from its first channel; a colour map (channels differ) gets one
    label per distinct colour, black being 0, the others numbered 1.. in sorted colour order.

    Args:
        path: label-map file; 0 is background.

    Returns:
        ``H x W`` int64 labels, all >= 0.

    Raises:
        DataError: ``"<path>: cannot read label map: <reason>"`` when the file is missing,
            corrupt, lossy-compressed, has negative or fractional values, or is not 2-D.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            array = _read_tiff(path, colours=False)
        else:
            array = _read_pil_labels(path)
        return _labels_from_array(array)
    except Exception as err:
        raise DataError(f"{path}: cannot read label map: {_reason(err)}") from err


def decode_image_bytes(data: bytes, name: str) -> np.ndarray:
    """Decode an encoded image held in memory (PNG, JPEG, BMP or TIFF) as ``H x W x 3`` uint8,
    converted as :func:`read_image` converts files.

    Args:
        data: the encoded file's bytes.
        name: what to call the data in an error (e.g. ``"a.json: imageData"``).

    Raises:
        DataError: ``"<name>: cannot read image: <reason>"``.
    """
    source = io.BytesIO(data)
    try:
        is_tiff = data[:4] in (b"II*\x00", b"MM\x00*")
        array = _read_tiff(source, colours=True) if is_tiff else _read_pil_image(source)
        return to_rgb_uint8(array)
    except DataError:
        raise
    except Exception as err:  # any decoder failure is bad data, reported with its name
        raise DataError(f"{name}: cannot read image: {_reason(err)}") from err


def read_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image or label map, from its header only (cheap).

    Raises:
        DataError: ``"<path>: cannot read image: <reason>"`` when the header cannot be read.
    """
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                dims = dict(zip(series.axes, series.shape, strict=True))
            return int(dims["Y"]), int(dims["X"])
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
        return int(height), int(width)
    except Exception as err:
        raise DataError(f"{path}: cannot read image: {_reason(err)}") from err


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Turn a 2-D image array (``H x W``, ``H x W x C`` with C in 1..4) into ``H x W x 3`` uint8.

    The conversion rules are those of :func:`read_image`.

    Raises:
        ValueError: when the shape is not that of a 2-D image.
    """
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = array[:, :, None]
    elif array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ValueError(
            f"expected a 2-D image with 1 to 4 channels, got an array of shape {array.shape}"
        )
    channels = array.shape[2]
    array = array[:, :, :1] if channels == 2 else array[:, :, :3]
    array = rescale_to_uint8(array)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 stays; bool becomes 0/255; anything else is rescaled by robust percentiles.

    See :func:`read_image` for the rule.
    """
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        low_value = values[finite].min() if finite.any() else 0.0
        values = np.where(finite, values, low_value)
    low, high = np.percentile(values, ROBUST_PERCENTILES)
    if high <= low:
        low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _read_pil_image(source: Path | io.BytesIO) -> np.ndarray:
    from PIL import Image

    with Image.open(source) as image:
        if image.format == "PNG" and _is_16bit_colour_png(image):
            return _read_png_16bit_colour(source)
        image.load()
        if image.mode in ("RGB", "RGBA", "L", "LA", "I", "F", "1") or image.mode.startswith("I;16"):
            return np.array(image)
        return np.array(image.convert("RGB"))


def _is_16bit_colour_png(image) -> bool:
    """PIL reads 16-bit-per-channel colour PNGs as 8-bit RGB; spot them before loading."""
    if image.mode not in ("RGB", "RGBA") or not image.tile:
        return False
    rawmode = image.tile[0].args
    return isinstance(rawmode, str) and rawmode.endswith(";16B")


def _read_png_16bit_colour(source: Path | io.BytesIO) -> np.ndarray:
    import cv2

    if isinstance(source, io.BytesIO):
        encoded = np.frombuffer(source.getvalue(), dtype=np.uint8)
        array = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    else:
        array = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError("OpenCV could not decode the 16-bit colour PNG")
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[:, :, [2, 1, 0]]  # BGR(A) -> RGB; alpha is dropped later anyway
    return array


def _read_pil_labels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.mode == "P":
            return _palette_labels(image)
        if image.mode in ("L", "I", "F", "1", "RGB", "RGBA") or image.mode.startswith("I;16"):
            return np.array(image)
        if image.mode == "LA":
            return np.array(image)[:, :, 0]
        raise ValueError(f"unsupported PNG mode {image.mode!r} for a label map")


def _palette_labels(image) -> np.ndarray:
    """A palette image's indices; but its grey levels when every colour it uses is a grey (a
    grayscale mask stored with a palette, as GIF stores them: its index order is the writer's
    choice, black need not be index 0)."""
    indices = np.array(image)
    palette = image.getpalette() or []
    table = np.array(palette, dtype=np.int64).reshape(-1, 3) if palette else np.zeros((0, 3))
    used = np.unique(indices)
    if used.size and used.max() < len(table):
        colours = table[used]
        if (colours == colours[:, :1]).all() and len(np.unique(colours[:, 0])) == used.size:
            return table[:, 0].astype(np.uint8)[indices]
    return indices


def _read_tiff(source: Path | io.BytesIO, *, colours: bool) -> np.ndarray:
    """First series of a TIFF with its channel axis (if any) last; volumes are refused.

    ``colours``: an image (a palette TIFF becomes its RGB colours, a white-is-zero one is
    inverted) rather than a label map (palette indices as stored; lossy codecs refused).
    """
    import tifffile

    with tifffile.TiffFile(source) as tif:
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        compression = getattr(page.compression, "name", str(page.compression))
        if not colours and compression in LOSSY_TIFF_COMPRESSIONS:
            raise ValueError(
                f"the TIFF is {compression}-compressed, a lossy codec: its values are not the "
                "labels that were saved (save masks uncompressed, LZW, Deflate or PackBits)"
            )
        array = series.asarray()
        axes = series.axes
        photometric = getattr(page.photometric, "name", "")
        colormap = page.colormap if colours and photometric == "PALETTE" else None
    if colormap is not None and array.dtype.kind == "u":
        array = _apply_colormap(array, colormap)
        axes = axes + "S"
    elif colours and photometric == "MINISWHITE" and array.dtype.kind in "ub":
        array = (~array) if array.dtype == bool else np.iinfo(array.dtype).max - array
    keep = [i for i, ax in enumerate(axes) if ax in "YX" or array.shape[i] > 1]
    extra = [axes[i] for i in keep if axes[i] not in "YX"]
    if len(extra) > 1 or (extra and extra[0] not in "SC"):
        raise ValueError(
            f"expected a 2-D image, got a TIFF with axes {axes!r} and shape {array.shape}"
        )
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if extra:
        array = np.moveaxis(array, axes.index(extra[0]), -1)
    return array


def _apply_colormap(indices: np.ndarray, colormap: np.ndarray) -> np.ndarray:
    """A palette TIFF's indices as RGB colours; the TIFF colormap is 16-bit per channel."""
    table = np.asarray(colormap).T  # (entries, 3)
    if table.max(initial=0) > 255:
        table = table // 257
    return table.astype(np.uint8)[np.minimum(indices, len(table) - 1)]


def _labels_from_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] in (3, 4):
        colours = array[:, :, :3]
        if (colours == colours[:, :, :1]).all():
            array = colours[:, :, 0]
        else:
            flat = colours.reshape(-1, 3)
            unique, inverse = np.unique(flat, axis=0, return_inverse=True)
            labels = inverse.reshape(array.shape[:2]).astype(np.int64)
            black = np.flatnonzero((unique == 0).all(axis=1))
            if black.size:  # renumber so that black is 0 and colours keep their order
                b = black[0]
                labels = np.where(labels == b, 0, np.where(labels < b, labels + 1, labels))
            else:
                labels = labels + 1
            return labels
    if array.ndim != 2:
        raise ValueError(f"expected a single-channel 2-D label map, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.int64)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or (array != np.round(array)).any():
            raise ValueError("float label map holds non-integer values")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"unsupported label map type {array.dtype}")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"label map has negative values (min {labels.min()})")
    return labels


def _reason(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "file not found"
    text = str(err).strip() or type(err).__name__
    codec = NEEDS_IMAGECODECS.search(text)
    if codec:
        return (
            f"TIFF compression {codec.group(1)} needs the imagecodecs package, which is not "
            "installed (pip install imagecodecs)"
        )
    return f"{type(err).__name__}: {text}" if not isinstance(err, ValueError) else text
