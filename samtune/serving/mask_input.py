"""A previous answer's low-resolution logits fed back as ``mask_input``, sent or cached.

Two ways in, as Roboflow's servers take them: the request's own ``mask_input`` (nested lists, or
with ``mask_input_format: "binary"`` the base64 of an ``.npy``, or of the ``.npz`` a
``format: "binary"`` answer carries, whose ``low_res_masks`` it takes), and the logits cache
(``save_logits_to_cache`` keeps an answer's logits under the image and its prompts;
``load_logits_from_cache``, or SAM 1's name ``use_mask_input_cache``, finds those of an earlier
request on the same image whose prompts each are contained in one of this request's).
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from samtune.serving.errors import ApiError
from samtune.serving.schemas import Prompt

MASK_INPUT_FORMATS = ("json", "binary")


def parse_mask_input(value: Any, fmt: str | None, *, count: int, size: int) -> np.ndarray:
    """The request's ``mask_input`` as ``count x size x size`` float32 logits.

    Accepted shapes: ``size x size`` (one prompt), ``count x size x size`` and
    ``count x 1 x size x size``.

    Raises:
        ApiError: 400 naming ``mask_input`` or ``mask_input_format`` and what was expected.
    """
    fmt = (fmt or "json").lower()
    if fmt not in MASK_INPUT_FORMATS:
        raise ApiError(
            400,
            f"mask_input_format {fmt!r} is not one of {', '.join(MASK_INPUT_FORMATS)}",
            "mask_input_format",
        )
    if fmt == "binary":
        array = _binary_array(value)
    else:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ApiError(
                400, "mask_input must be nested lists of numbers (logits)", "mask_input"
            ) from None
    expected = f"{count} x {size} x {size} (prompts x the model's low-resolution logits)"
    if array.ndim == 2 and count == 1:
        array = array[None]
    elif array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (count, size, size):
        raise ApiError(
            400, f"mask_input has shape {tuple(array.shape)}; expected {expected}", "mask_input"
        )
    if not np.isfinite(array).all():
        raise ApiError(400, "mask_input holds NaN or infinite values", "mask_input")
    return np.ascontiguousarray(array, dtype=np.float32)


def _binary_array(value: Any) -> np.ndarray:
    if not isinstance(value, str) or not value:
        raise ApiError(
            400,
            "mask_input must be base64 of an .npy or .npz file with mask_input_format 'binary'",
            "mask_input",
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"mask_input is not valid base64: {exc}", "mask_input") from None
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)  # never unpickle a request
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                if "low_res_masks" not in loaded.files:
                    raise ApiError(
                        400,
                        f"mask_input .npz has {loaded.files}, no 'low_res_masks'",
                        "mask_input",
                    )
                return np.asarray(loaded["low_res_masks"], dtype=np.float32)
        return np.asarray(loaded, dtype=np.float32)
    except ApiError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise ApiError(
            400, f"mask_input is not an .npy/.npz of numbers: {exc}", "mask_input"
        ) from None


def prompt_key(prompt: Prompt) -> tuple[Any, frozenset]:
    """A prompt as ``(box, set of points)``: what containment between prompts compares."""
    box = None if prompt.box is None else tuple(prompt.box.model_dump().values())
    points = frozenset((p.x, p.y, bool(p.positive)) for p in prompt.points or [])
    return box, points


class LogitsCache:
    """The low-resolution logits of earlier answers, per ``(model, image_id)``, bounded in entries.

    Args:
        max_entries: answers kept in all; the least recently stored leave first.
    """

    def __init__(self, max_entries: int = 256) -> None:
        self.max_entries = int(max_entries)
        self._items: OrderedDict[Hashable, tuple[list, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, image: Hashable, prompts: Sequence[Prompt], logits: np.ndarray) -> None:
        """Keep ``logits`` (one ``h x w`` per prompt) of an answer to ``prompts`` on ``image``."""
        keys = [prompt_key(p) for p in prompts]
        with self._lock:
            entry = (image, tuple(keys))
            self._items.pop(entry, None)
            self._items[entry] = (keys, np.array(logits, np.float32, copy=True))
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def find(self, image: Hashable, prompts: Sequence[Prompt]) -> np.ndarray | None:
        """Logits for ``prompts`` (request order) from the most recent earlier answer on ``image``
        whose prompts match this request's one to one, each contained in its match (same box,
        a subset of the points) and not all equal; the one with the most points wins, the most
        recent among equals. None when no answer fits."""
        want = [prompt_key(p) for p in prompts]
        best: tuple[int, np.ndarray] | None = None
        with self._lock:
            candidates = [v for (img, _), v in self._items.items() if img == image]
        for keys, logits in reversed(candidates):
            if len(keys) != len(want):
                continue
            order = _match(keys, want)
            if order is None or all(k[1] == want[j][1] for k, j in zip(keys, order)):
                continue  # not contained, or the same prompts again
            points = sum(len(k[1]) for k in keys)
            if best is None or points > best[0]:
                reordered = np.empty_like(logits)
                reordered[order] = logits
                best = (points, reordered)
        return None if best is None else best[1]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def _match(old: list, new: list) -> list[int] | None:
    """For each earlier prompt, the position of a distinct current prompt that contains it."""
    free = list(range(len(new)))
    order = []
    for box, points in old:
        for j in free:
            if new[j][0] == box and points <= new[j][1]:
                order.append(j)
                free.remove(j)
                break
        else:
            return None
    return order
