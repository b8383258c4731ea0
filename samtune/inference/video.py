"""Clip prediction (``samtune-predict video=...``): prompts on one frame, masks on every frame.

The official ``SAM2VideoPredictor`` (from :func:`~samtune.inference.predictor.load_video_predictor`,
at the model's own ``image_size``) tracks the prompted objects forwards from the first prompted
frame to the end, then backwards from it to the start, as SAM 2's demo and MedSAM2's key-slice
propagation do. Each pixel of a frame takes the id of the object with the highest positive mask
logit there (0 where none is positive). The prompts file format is in
:mod:`samtune.inference.clip_prompts`, the outputs in :mod:`samtune.inference.clip_files`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

from samtune.inference.clip_files import ClipInput, read_clip_input, write_clip_labels
from samtune.inference.clip_prompts import FramePrompts, read_clip_prompts
from samtune.inference.predictor import load_video_predictor
from samtune.io_atomic import write_json_atomic
from samtune.models import ModelSpec

log = logging.getLogger(__name__)


_QUIET_LOCK = threading.Lock()
_QUIET_DEPTH: dict[str, int] = {}
_QUIET_ORIGINAL: dict[str, Any] = {}


@contextlib.contextmanager
def quiet_tqdm(module: ModuleType) -> Iterator[None]:
    """Within the block, the bars that ``module`` makes with its own ``tqdm`` are disabled.

    sam2 shows a tqdm bar for every frame loading (``sam2.utils.misc``) and every propagation
    (``sam2.sam2_video_predictor``), which fills an evaluation's log. The module's ``tqdm`` name
    is swapped for ``tqdm(..., disable=True)`` and put back when the outermost block ends
    (nested and concurrent blocks share one swap); tqdm itself, its settings and other modules
    are left as they are.
    """
    name = module.__name__
    with _QUIET_LOCK:
        if _QUIET_DEPTH.get(name, 0) == 0:
            _QUIET_ORIGINAL[name] = module.tqdm
            module.tqdm = functools.partial(module.tqdm, disable=True)
        _QUIET_DEPTH[name] = _QUIET_DEPTH.get(name, 0) + 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_DEPTH[name] -= 1
            if _QUIET_DEPTH[name] == 0:
                module.tqdm = _QUIET_ORIGINAL.pop(name)


def propagate(
    predictor: Any, state: dict[str, Any], **kwargs: Any
) -> Iterator[tuple[int, list[int], torch.Tensor]]:
    """``predictor.propagate_in_video(state, **kwargs)`` without sam2's "propagate in video"
    progress bar (the bar is made when the generator starts, so only that first step runs
    inside :func:`quiet_tqdm`)."""
    import sam2.sam2_video_predictor  # imported only here: importing sam2 sets up Hydra

    frames = predictor.propagate_in_video(state, **kwargs)
    with quiet_tqdm(sam2.sam2_video_predictor):
        first = next(frames, None)
    if first is None:
        return
    yield first
    yield from frames


def video_state(predictor: Any, frames: np.ndarray) -> dict[str, Any]:
    """``predictor.init_state`` on frames held in memory (``T x H x W x 3`` uint8).

    ``init_state`` reads only a folder of ``<index>.jpg`` files and decodes each with PIL
    whatever its content; the frames are written there as uncompressed PNG data (lossless, and
    quicker to write and read than a compressed one), so volume slices and
    16-bit frames reach the model exactly as read (no JPEG loss) and are resized by the
    official loader itself.
    """
    import sam2.utils.misc

    with tempfile.TemporaryDirectory(prefix="samtune-frames-") as folder:
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(
                Path(folder) / f"{t:05d}.jpg", format="PNG", compress_level=0
            )
        with quiet_tqdm(sam2.utils.misc):
            return predictor.init_state(video_path=folder)


def predict_clip(predictor: Any, frames: np.ndarray, prompts: list[FramePrompts]) -> np.ndarray:
    """Object-id maps (``T x H x W`` uint8) of the prompted objects on every frame.

    Args:
        predictor: a ``SAM2VideoPredictor``.
        frames: the video, ``T x H x W x 3`` uint8.
        prompts: the prompted frames (see :func:`read_clip_prompts`).
    """
    state = video_state(predictor, frames)
    for entry in prompts:
        for object_id, prompt in entry.objects:
            predictor.add_new_points_or_box(
                inference_state=state,
                frame_idx=entry.frame,
                obj_id=object_id,
                points=None if prompt.points is None else prompt.points.astype(np.float32),
                labels=None if prompt.labels is None else prompt.labels.astype(np.int32),
                box=None if prompt.box is None else prompt.box.astype(np.float32),
            )
    first = min(entry.frame for entry in prompts)
    t, h, w = frames.shape[:3]
    labels = np.zeros((t, h, w), dtype=np.uint8)
    done: set[int] = set()
    for reverse in (False, True):
        if reverse and first == 0:
            break
        for frame_idx, obj_ids, logits in propagate(
            predictor, state, start_frame_idx=first, reverse=reverse
        ):
            if frame_idx in done:
                continue  # the prompted frame comes back at the start of the backward pass
            done.add(frame_idx)
            scores = logits[:, 0].float().cpu().numpy()  # objects x H x W
            top = scores.argmax(axis=0)
            value = np.take_along_axis(scores, top[None], axis=0)[0]
            ids = np.asarray(obj_ids, dtype=np.uint8)
            labels[frame_idx] = np.where(value > 0, ids[top], 0)
    return labels


def run_predict_video(
    *,
    ckpt: str | None,
    video: str | os.PathLike,
    prompts: str | os.PathLike,
    out: str | os.PathLike,
    axis: int = 2,
    window: Any = None,
    normalize: Any = None,
    image_size: int | None = None,
    device: str = "cpu",
    spec: ModelSpec | None = None,
) -> Path:
    """What ``samtune-predict video=...`` does: read and check, load, propagate, write.

    Returns:
        The ``predictions.json`` path (frames and files written, objects per frame).
    """
    clip: ClipInput = read_clip_input(video, axis=axis, window=window, normalize=normalize)
    parsed = read_clip_prompts(prompts, frame_names=clip.names, size=clip.frames.shape[1:3])
    predictor = load_video_predictor(ckpt, image_size=image_size, device=device, spec=spec)
    with torch.inference_mode():
        labels = predict_clip(predictor, clip.frames, parsed)
    files = write_clip_labels(out, clip, labels)
    summary = {
        "input": str(clip.path),
        "kind": "volume" if clip.volume is not None else "video",
        "axis": clip.axis if clip.volume is not None else None,
        "image_size": int(predictor.image_size),
        "prompted_frames": [entry.frame for entry in parsed],
        "objects": sorted({i for entry in parsed for i, _ in entry.objects}),
        "files": [f.name for f in files],
        "frames": [
            {"frame": t, "name": name, "objects": sorted(int(v) for v in np.unique(labels[t]) if v)}
            for t, name in enumerate(clip.names)
        ],
    }
    path = write_json_atomic(Path(out) / "predictions.json", summary, indent=1)
    log.info("%s: %d frames, %d files written to %s", clip.path, len(clip.names), len(files), out)
    return path
