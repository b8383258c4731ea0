"""Checking COCO segmentations before pycocotools decodes them.

pycocotools trusts its input: a run-length string whose runs do not add up to ``height x width``
decodes to a wrong mask without complaint. These functions read the runs in numpy, check them,
and return the object's area, so a bad annotation is found when the dataset is indexed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MAX_CHARS_PER_RUN = 12  # 60 bits; real runs need at most 7 characters


def decode_counts(counts: str | bytes) -> np.ndarray:
    """Run lengths of a compressed COCO RLE ``counts`` string (the ``rleFrString`` format).

    Each run is stored as a difference to the run two places before it (from the fourth run on),
    in groups of 6-bit characters offset by 48: 5 value bits, bit 0x20 "more characters follow",
    and in the last character bit 0x10 as the sign.

    Raises:
        ValueError: when the string holds characters outside the alphabet or ends inside a run.
    """
    raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
    if not raw:
        return np.zeros(0, dtype=np.int64)
    chars = np.frombuffer(raw, dtype=np.uint8).astype(np.int64) - 48
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError("RLE counts string holds characters outside the COCO alphabet ('0'..'o')")
    more = (chars & 0x20) != 0
    if more[-1]:
        raise ValueError("RLE counts string ends in the middle of a run")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_CHARS_PER_RUN:
        raise ValueError("RLE counts string holds a run too long to be real")
    group = np.repeat(np.arange(ends.size), lengths)
    position = np.arange(chars.size) - starts[group]
    runs = np.zeros(ends.size, dtype=np.int64)
    np.add.at(runs, group, (chars & 0x1F) << (5 * position))
    negative = (chars[ends] & 0x10) != 0
    runs = np.where(negative, runs | np.left_shift(np.int64(-1), 5 * lengths), runs)
    runs[1::2] = np.cumsum(runs[1::2])
    runs[2::2] = np.cumsum(runs[2::2])
    return runs


def check_runs(runs: np.ndarray, *, height: int, width: int) -> int:
    """Check that run lengths tile a ``height x width`` mask; return the foreground area.

    Raises:
        ValueError: when a run is negative or the runs do not add up to ``height * width``.
    """
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE has a negative run ({int(runs.min())})")
    total = int(runs.sum())
    if total != height * width:
        raise ValueError(
            f"RLE runs add up to {total} pixels, expected {height}x{width}={height * width}"
        )
    return int(runs[1::2].sum())


def segmentation_area(
    segmentation: Any, *, height: int, width: int
) -> tuple[dict[str, Any] | None, int]:
    """Validate a COCO ``segmentation`` and turn it into a compressed RLE.

    Args:
        segmentation: compressed RLE ``{"size", "counts": str}``, uncompressed RLE
            ``{"size", "counts": [int, ...]}``, or polygons ``[[x0, y0, x1, y1, ...], ...]``.
        height: the image entry's height.
        width: the image entry's width.

    Returns:
        ``(rle, area)``: a compressed RLE pycocotools can decode, and its foreground pixel count.
        An empty polygon list gives ``(None, 0)``.

    Raises:
        ValueError: describing what is wrong (bad structure, RLE size different from
            ``height x width``, runs that do not tile the mask, degenerate polygon).
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (
            isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(v) for v in size)
        ):
            raise ValueError(f"RLE 'size' must be [height, width], got {size!r}")
        if (int(size[0]), int(size[1])) != (height, width):
            raise ValueError(
                f"RLE size {int(size[0])}x{int(size[1])} differs from the image entry's {height}x{width}"
            )
        if isinstance(counts, (str, bytes)):
            area = check_runs(decode_counts(counts), height=height, width=width)
            text = counts.decode("ascii") if isinstance(counts, bytes) else counts
            return {"size": [height, width], "counts": text}, area
        if isinstance(counts, list):
            if not all(_is_int(v) for v in counts):
                raise ValueError("uncompressed RLE 'counts' must be a list of integers")
            area = check_runs(np.asarray(counts, dtype=np.int64), height=height, width=width)
            rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
            return rle, area
        raise ValueError(
            f"RLE 'counts' must be a string or a list of integers, got {type(counts).__name__}"
        )
    if isinstance(segmentation, list):
        if not segmentation:
            return None, 0
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
                raise ValueError("a polygon must be a flat list of numbers [x0, y0, x1, y1, ...]")
            if len(polygon) < 6 or len(polygon) % 2:
                raise ValueError(
                    f"a polygon needs an even number (>= 6) of coordinates, got {len(polygon)}"
                )
            if not np.isfinite(np.asarray(polygon, dtype=np.float64)).all():
                raise ValueError("a polygon has non-finite coordinates")
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        return rle, int(mask_utils.area(rle))
    raise ValueError(
        f"segmentation must be an RLE dict or a list of polygons, got {type(segmentation).__name__}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
