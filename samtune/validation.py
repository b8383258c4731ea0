"""Checks of configuration values where a class reads them, all with one message shape.

Every message names the config key and the value: ``optim.lr must be > 0, got -0.001``. The
classes that Hydra instantiates (optimiser settings, prompt simulator, loss, model spec,
datamodules, evaluator) call these helpers in their constructors, so a bad value stops a run
before anything is built, whichever entry point read it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

# SAM 2's Hiera image encoder downsamples by 4 (patch embedding) and then by 2 three times; an
# input side that is not a multiple of 32 makes the feature pyramid's levels disagree in size
# (measured with sam2.1_hiera_tiny: 32, 64, 96, 128, 160 px run; 48, 80, 112 px fail).
IMAGE_SIZE_MULTIPLE = 32


class ConfigValueError(ValueError):
    """A configuration value that cannot be right; the message names the key and the value."""


def _bounds_text(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    low = f"({gt:g}" if gt is not None else f"[{ge:g}" if ge is not None else None
    high = f"{lt:g})" if lt is not None else f"{le:g}]" if le is not None else None
    if low and high:
        return f"in {low}, {high}"
    parts = []
    if gt is not None:
        parts.append(f"> {gt:g}")
    if ge is not None:
        parts.append(f">= {ge:g}")
    if lt is not None:
        parts.append(f"< {lt:g}")
    if le is not None:
        parts.append(f"<= {le:g}")
    return " and ".join(parts)


def check_number(
    key: str,
    value: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    integer: bool = False,
    multiple_of: int | None = None,
    none_ok: bool = False,
    also: str | None = None,
    note: str | None = None,
) -> Any:
    """Check a number from the config and return it as ``int`` (``integer``) or ``float``.

    Args:
        key: the config key, as a user would type it (``optim.lr``).
        value: the value read.
        gt: the value must be greater than this.
        ge: the value must be at least this.
        lt: the value must be less than this.
        le: the value must be at most this.
        integer: the value must be a whole number.
        multiple_of: the value must be a whole multiple of this.
        none_ok: None is allowed (and returned as None).
        also: another accepted value, for the message only (the caller handles it), e.g.
            ``"'auto'"``.
        note: added to the message in parentheses.

    Returns:
        The value as ``int`` or ``float`` (None when allowed and given).

    Raises:
        ConfigValueError: ``"<key> must be <rule>, got <value>"``.
    """
    if value is None and none_ok:
        return None
    rule = _bounds_text(gt, ge, lt, le)
    noun = "an integer" if integer else "a number"
    if multiple_of:
        noun = f"a multiple of {multiple_of}"
        if gt == 0 and ge is None and lt is None and le is None:
            noun, rule = f"a positive multiple of {multiple_of}", ""
    elif noun == "a number" and rule:
        noun = ""  # "optim.lr must be > 0": the bounds say it all
    others = (["null"] if none_ok else []) + ([also] if also else [])
    tail = f" ({note})" if note else ""
    expected = " or ".join([*others, " ".join(p for p in (noun, rule) if p)]) + tail
    number = _as_number(value)
    if number is None or math.isnan(number):
        numeric = " ".join(p for p in ("an integer" if integer else "a number", rule) if p)
        raise ConfigValueError(
            f"{key} must be {' or '.join([*others, numeric])}{tail}, got {value!r}"
        )
    if (
        (integer and not float(number).is_integer())
        or (gt is not None and not number > gt)
        or (ge is not None and not number >= ge)
        or (lt is not None and not number < lt)
        or (le is not None and not number <= le)
        or (multiple_of and not (float(number).is_integer() and int(number) % multiple_of == 0))
    ):
        raise ConfigValueError(f"{key} must be {expected}, got {value!r}")
    if integer or multiple_of:
        return int(number)
    return float(number)


def check_probability(key: str, value: Any) -> float:
    """A probability in ``[0, 1]``.

    Raises:
        ConfigValueError: naming ``key`` and the value.
    """
    number = _as_number(value)
    if number is None or math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ConfigValueError(f"{key} must be a probability in [0, 1], got {value!r}")
    return float(number)


def check_image_size(key: str, value: Any) -> int:
    """A model input side: a positive multiple of 32 (what SAM 2's image encoder needs).

    Raises:
        ConfigValueError: naming ``key`` and the value.
    """
    return check_number(key, value, gt=0, multiple_of=IMAGE_SIZE_MULTIPLE)


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of ``choices``.

    Raises:
        ConfigValueError: naming ``key``, the value and the choices.
    """
    options = tuple(choices)
    if value not in options:
        raise ConfigValueError(
            f"{key} must be one of {', '.join(repr(c) for c in options)}, got {value!r}"
        )
    return value


def _as_number(value: Any) -> float | int | None:
    """``value`` as a Python number; None for booleans and anything that is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return _as_number(value.item())
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
