"""Map volume intensities to uint8: CT windows (level/width in HU) and MR percentile scaling.

Both maps are linear from a ``(lower, upper)`` range onto ``0..255``, clipped, and rounded to
the nearest integer (halves round up). A window's range is fixed; a percentile range is
computed once per volume (``range_for``) so every slice of a volume is scaled the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np


class IntensityMap(Protocol):
    """Maps a volume's values to uint8 through a per-volume ``(lower, upper)`` range."""

    def range_for(self, array: np.ndarray) -> tuple[float, float]:
        """The ``(lower, upper)`` values that map to 0 and 255 for this volume."""
        ...

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """``array`` as uint8, scaled with ``range_for(array)``."""
        ...


def to_uint8(values: np.ndarray, lower: float, upper: float) -> np.ndarray:
    """Scale ``values`` linearly so ``lower -> 0`` and ``upper -> 255``; clip and round.

    Rounding is to the nearest integer with halves going up. NaN maps to 0. When
    ``upper <= lower`` values above ``lower`` map to 255 and the rest to 0.

    Args:
        values: any real array.
        lower: the value that maps to 0.
        upper: the value that maps to 255.

    Returns:
        A uint8 array of the same shape.
    """
    values = np.asarray(values, dtype=np.float64)
    if not upper > lower:
        return np.where(values > lower, 255, 0).astype(np.uint8)
    scaled = (values - lower) * 255.0 / (upper - lower)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.floor(np.clip(scaled, 0.0, 255.0) + 0.5).astype(np.uint8)


@dataclass(frozen=True)
class Window:
    """A CT display window: ``level`` (centre) and ``width`` in HU.

    HU ``level - width/2`` maps to 0 and ``level + width/2`` to 255.
    """

    level: float
    width: float

    def __post_init__(self) -> None:
        if not np.isfinite(self.level) or not np.isfinite(self.width) or self.width <= 0:
            raise ValueError(
                f"window needs a finite level and a width > 0, got level={self.level}, width={self.width}"
            )

    @property
    def lower(self) -> float:
        """The HU value that maps to 0."""
        return self.level - self.width / 2

    @property
    def upper(self) -> float:
        """The HU value that maps to 255."""
        return self.level + self.width / 2

    def range_for(self, array: np.ndarray) -> tuple[float, float]:
        """The window's fixed ``(lower, upper)``; ``array`` is not looked at."""
        return self.lower, self.upper

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """HU values as uint8 through this window."""
        return to_uint8(array, self.lower, self.upper)


WINDOW_PRESETS: Mapping[str, Window] = MappingProxyType(
    {
        "abdomen": Window(level=40, width=400),
        "lung": Window(level=-600, width=1500),
        "bone": Window(level=400, width=1800),
        "brain": Window(level=40, width=80),
    }
)


@dataclass(frozen=True)
class PercentileNormalization:
    """Scale between two percentiles of a volume (MR): ``lower``-th -> 0, ``upper``-th -> 255.

    Attributes:
        lower: lower percentile, in ``[0, 100)``.
        upper: upper percentile, in ``(lower, 100]``.
        nonzero_only: compute the percentiles over the volume's nonzero voxels (the usual
            choice for MR, whose background is 0); over all voxels if there are none.
    """

    lower: float = 0.5
    upper: float = 99.5
    nonzero_only: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.lower < self.upper <= 100:
            raise ValueError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={self.lower}, "
                f"upper={self.upper}"
            )

    def range_for(self, array: np.ndarray) -> tuple[float, float]:
        """The volume's ``lower`` and ``upper`` percentiles (finite voxels only)."""
        values = np.asarray(array).ravel()
        values = values[np.isfinite(values)]
        if self.nonzero_only and np.any(values != 0):
            values = values[values != 0]
        if values.size == 0:
            return 0.0, 0.0
        low, high = np.percentile(values, [self.lower, self.upper])
        return float(low), float(high)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        """The volume as uint8, scaled between its own percentiles."""
        return to_uint8(array, *self.range_for(array))


def resolve_window(window: str | Mapping[str, Any] | Window) -> Window:
    """A ``Window`` from a preset name, a ``{"level": ..., "width": ...}`` mapping, or a Window.

    Raises:
        ValueError: an unknown preset, or a mapping without exactly ``level`` and ``width``.
    """
    if isinstance(window, Window):
        return window
    if isinstance(window, str):
        preset = WINDOW_PRESETS.get(window.lower())
        if preset is None:
            raise ValueError(
                f"unknown CT window preset {window!r}; expected one of {sorted(WINDOW_PRESETS)} "
                "or a mapping {'level': ..., 'width': ...}"
            )
        return preset
    if isinstance(window, Mapping):
        keys = {str(k) for k in window}
        if keys != {"level", "width"}:
            raise ValueError(
                f"a CT window mapping needs exactly the keys level and width, got {sorted(keys)}"
            )
        return Window(
            level=_number(window["level"], "level"), width=_number(window["width"], "width")
        )
    raise ValueError(
        f"window must be a preset name or a mapping with level and width, got {window!r}"
    )


def resolve_normalization(
    normalize: str | Mapping[str, Any] | PercentileNormalization,
) -> PercentileNormalization:
    """A ``PercentileNormalization`` from ``"percentile"`` or a mapping of its fields.

    The mapping may hold ``method`` (must be ``"percentile"``), ``lower``, ``upper`` and
    ``nonzero_only``.

    Raises:
        ValueError: an unknown method or field.
    """
    if isinstance(normalize, PercentileNormalization):
        return normalize
    if isinstance(normalize, str):
        if normalize.lower() != "percentile":
            raise ValueError(f"unknown normalization {normalize!r}; expected 'percentile'")
        return PercentileNormalization()
    if isinstance(normalize, Mapping):
        fields = {str(k): v for k, v in normalize.items()}
        method = fields.pop("method", "percentile")
        if method != "percentile":
            raise ValueError(f"unknown normalization method {method!r}; expected 'percentile'")
        unknown = set(fields) - {"lower", "upper", "nonzero_only"}
        if unknown:
            raise ValueError(
                f"unknown percentile normalization keys {sorted(unknown)}; expected lower, upper, nonzero_only"
            )
        kwargs: dict[str, Any] = {
            k: _number(v, k) for k, v in fields.items() if k != "nonzero_only"
        }
        if "nonzero_only" in fields:
            kwargs["nonzero_only"] = bool(fields["nonzero_only"])
        return PercentileNormalization(**kwargs)
    raise ValueError(f"normalize must be 'percentile' or a mapping, got {normalize!r}")


def resolve_intensity(
    *,
    window: str | Mapping[str, Any] | Window | None = None,
    normalize: str | Mapping[str, Any] | PercentileNormalization | None = None,
) -> IntensityMap:
    """The intensity map for a dataset: a CT window or a percentile normalization.

    Args:
        window: a CT preset name (``abdomen`` W400/L40, ``lung`` W1500/L-600, ``bone``
            W1800/L400, ``brain`` W80/L40) or ``{"level": ..., "width": ...}`` in HU.
        normalize: ``"percentile"`` (0.5 / 99.5 over nonzero voxels) or a mapping of
            ``PercentileNormalization`` fields.

    Returns:
        The window if given, else the normalization; with neither, percentile normalization.

    Raises:
        ValueError: both are given, or either is invalid.
    """
    if window is not None and normalize is not None:
        raise ValueError(
            f"give either window ({window!r}) for CT or normalize ({normalize!r}) for MR, not both"
        )
    if window is not None:
        return resolve_window(window)
    return resolve_normalization("percentile" if normalize is None else normalize)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)
