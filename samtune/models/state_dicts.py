"""State dicts: read from a file safely, loaded into a model strictly, and the error for both.

Opening a file never runs its code: every file is read with ``torch.load(weights_only=True)``
(:func:`safe_load`), which rebuilds only tensors and plain containers (dict, list, tuple, str,
numbers, None). Everything samtune writes is made of these, so :data:`SAFE_GLOBALS` (the extra
classes the unpickler may build) is empty; a file that needs anything else is refused with
:class:`CheckpointError`. :mod:`samtune.models.weights` builds on these to read any weights.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

NONE_WORDS = frozenset({"", "none", "null"})

# Classes the unpickler may build besides tensors and plain containers: none. Add a class here
# only if samtune itself starts writing it, and only a class whose construction runs no code.
SAFE_GLOBALS: tuple[Any, ...] = ()


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def is_none(value: Any) -> bool:
    """Whether a ``ckpt=`` / ``checkpoint=`` value means "no file": None, "", "none", "null"."""
    return value is None or str(value).strip().lower() in NONE_WORDS


def size_mismatch(path: str | os.PathLike, found: str, asked: str) -> CheckpointError:
    """The one error for weights of another model size, naming both sizes."""
    return CheckpointError(
        f"checkpoint {path} holds a {found} model, but model={asked} was asked for; "
        f"choose model={found} or a {asked} checkpoint"
    )


def safe_load(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """``torch.load`` with ``weights_only=True`` (to the CPU), with errors that name the file.

    Raises:
        CheckpointError: the file is missing, damaged, or holds Python objects beyond tensors and
            plain containers (such a file could run code when unpickled; it is not opened).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        text = str(exc)
        found = re.search(r"GLOBAL (\S+) was not an allowed global", text)
        if found:
            raise CheckpointError(
                f"refusing to open {what} {path}: it holds a Python object ({found.group(1)}) "
                "that is not a tensor or plain container; opening it could run code. samtune "
                "writes only tensors, dicts, lists, strings and numbers, so this file was not "
                "written by samtune (or was changed since)"
            ) from None
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", text)
        detail = reason.group(1).strip() if reason else (text.splitlines() or [""])[0]
        raise CheckpointError(f"cannot read {what} {path}: {detail}") from exc


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an official-format (or exported) checkpoint."""
    obj = safe_load(path)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise CheckpointError(
            f"checkpoint {path} is not in the SAM 2 format: expected a dict with a 'model' state dict"
        )
    return obj["model"]


def log_resolution(path: Path, recorded: int, used: int) -> None:
    """Say which resolution a model is built at when the caller overrides the recorded one."""
    if recorded != used:
        log.warning("%s: recorded image_size %d, using %d as asked", path, recorded, used)


def load_strict(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    what: str,
    target: str = "the model",
    assign: bool = False,
) -> None:
    """Load ``state_dict`` with no missing or unexpected keys, or raise naming ``what``.

    Args:
        model: the model to load into.
        state_dict: the weights.
        what: the weights' description for the error, e.g. ``checkpoint x.pt``.
        target: the model's description for the error.
        assign: take over the given tensors instead of copying them.

    Raises:
        CheckpointError: for shape mismatches and for missing or unexpected keys.
    """
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=assign)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{what} does not fit {target}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not fit {target}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
