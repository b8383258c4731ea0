"""Prompts files for a video or a volume: objects prompted on one frame (or a few), by id.

``samtune-predict video=<frames folder or volume> prompts=prompts.json`` reads::

    {"frame": 3, "objects": [
        {"id": 1, "points": [[40, 30]], "labels": [1]},
        {"id": 2, "box": [50, 8, 62, 20]}
    ]}

``frame`` is the frame's position in the video (0 = the first frame in name order; for a volume
the slice index along ``axis``), or a frame file name (``"00003.jpg"``). Each object has points
and/or a box as in :mod:`samtune.inference.prompt_files` (``[x, y]`` pixels of that frame; for a
volume slice ``x`` is the column, the second remaining array axis, and ``y`` the row), and an
``id`` (1-255, the palette value its masks are written with; by default its position in the list
plus 1). A list of such entries prompts several frames; one id prompted on two frames is one
object.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from samtune.inference.prompt_files import ObjectPrompt, PromptError, parse_object

MAX_OBJECT_ID = 255  # one palette index per object


@dataclass(frozen=True)
class FramePrompts:
    """The objects prompted on one frame.

    Attributes:
        frame: the frame's position in the video.
        objects: ``(object id, prompt)`` in file order.
    """

    frame: int
    objects: list[tuple[int, ObjectPrompt]]


def read_clip_prompts(
    prompts_file: str | os.PathLike,
    *,
    frame_names: list[str],
    size: tuple[int, int],
) -> list[FramePrompts]:
    """Read and check a clip prompts file before anything is predicted.

    Args:
        prompts_file: the JSON file.
        frame_names: the video's frame names in order (for a volume: ``slice <k>``).
        size: ``(height, width)`` of the frames.

    Returns:
        One entry per prompted frame, in file order.

    Raises:
        PromptError: an unreadable file, a frame that does not exist, a bad object, an id out of
            range or given twice on one frame, naming the file, the frame and the object.
    """
    path = Path(prompts_file)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptError(f"cannot read prompts file {path}: {exc}") from exc
    entries = raw if isinstance(raw, list) else [raw]
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise PromptError(
            f'{path}: expected {{"frame": <index or file name>, "objects": [...]}} or a list of '
            f"them, got {raw!r:.200}"
        )
    height, width = size
    out: list[FramePrompts] = []
    for n, entry in enumerate(entries):
        unknown = set(entry) - {"frame", "objects"}
        if unknown or "frame" not in entry or "objects" not in entry:
            raise PromptError(
                f"{path}: entry {n} needs exactly 'frame' and 'objects', got keys {sorted(entry)}"
            )
        frame = _frame_index(entry["frame"], frame_names, where=f"{path}: entry {n}")
        objects = entry["objects"]
        if not isinstance(objects, list) or not objects:
            raise PromptError(f"{path}: frame {entry['frame']!r} needs a non-empty list of objects")
        parsed: list[tuple[int, ObjectPrompt]] = []
        for k, obj in enumerate(objects):
            where = f"{path}: frame {entry['frame']!r}, object {k}"
            if not isinstance(obj, dict):
                raise PromptError(f"{where}: an object must be a dict, got {obj!r}")
            object_id = _object_id(obj.get("id", k + 1), where)
            if any(object_id == i for i, _ in parsed):
                raise PromptError(f"{where}: id {object_id} is given twice on this frame")
            fields = {key: value for key, value in obj.items() if key != "id"}
            parsed.append(
                (object_id, parse_object(fields, height=height, width=width, where=where))
            )
        out.append(FramePrompts(frame=frame, objects=parsed))
    return out


def _frame_index(value: Any, frame_names: list[str], *, where: str) -> int:
    if isinstance(value, str):
        if value in frame_names:
            return frame_names.index(value)
        raise PromptError(f"{where}: no frame named {value!r} (frames: {frame_names[:5]}...)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{where}: 'frame' must be a frame index or file name, got {value!r}")
    if not 0 <= value < len(frame_names):
        raise PromptError(
            f"{where}: frame {value} is out of range; the video has {len(frame_names)} frames "
            f"(0 to {len(frame_names) - 1})"
        )
    return int(value)


def _object_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OBJECT_ID:
        raise PromptError(
            f"{where}: 'id' must be a whole number from 1 to {MAX_OBJECT_ID}, got {value!r}"
        )
    return int(value)
