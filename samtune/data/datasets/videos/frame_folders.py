"""Videos stored as a folder of frame images and a folder of per-frame label maps.

Shared by the VOS reader (DAVIS / MOSE / YouTube-VOS) and the plain frame-folder reader. Frames
are ordered by the numbers in their names (``2.png`` before ``10.png``); a label map pairs with
the frame of the same stem (or the stem followed by a mask suffix such as ``_mask``), and a frame
without one is not annotated. A label map's values are object ids, the same object keeping its
value on every frame (VOS palette indices: 0 background).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.datasets.folder import mask_key
from samtune.data.datasets.videos.source import VideoSource, stack_frames
from samtune.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label_map, read_size
from samtune.data.sample import DataError

Problem = Callable[[str, str], None]


def natural_key(path: Path) -> list[Any]:
    """Sort key that orders the numbers inside a name by value (``f2`` before ``f10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files of ``folder`` with one of ``suffixes`` (any case), hidden ones left out, in
    natural order."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    ]
    return sorted(files, key=natural_key)


def pair_labels(
    frames: list[Path],
    label_folder: Path | None,
    *,
    suffixes: Sequence[str],
    problem: Problem,
) -> list[Path | None]:
    """The label map of each frame (None where there is none), by stem.

    A label map that matches no frame, or a frame matched by two label maps, is reported through
    ``problem(file, message)`` and left out.
    """
    if label_folder is None or not label_folder.is_dir():
        return [None] * len(frames)
    by_stem = {f.stem: i for i, f in enumerate(frames)}
    labels: list[Path | None] = [None] * len(frames)
    for label in list_files(label_folder, LABEL_SUFFIXES):
        match = next((by_stem[k] for k in mask_key(label, suffixes) if k in by_stem), None)
        if match is None:
            problem(
                str(label),
                f"{label}: label map without a frame: no frame named {label.stem}.* in "
                f"{frames[0].parent if frames else label_folder}",
            )
            continue
        if labels[match] is not None:
            problem(
                str(label),
                f"{label}: frame {frames[match].name} has two label maps, {labels[match].name} "
                f"and {label.name}",
            )
            continue
        labels[match] = label
    return labels


class FrameFolderSource(VideoSource):
    """One video: its frame files and, per frame, a label map or None.

    Args:
        name: the video's name.
        frames: frame image files, in order.
        labels: one label map (or None) per frame.
        void_value: a label value that marks pixels to ignore (DAVIS: 255), never an object;
            None when every nonzero value is an object.
        categories: ``{object id: class id}`` where the format names classes (YouTube-VOS'
            ``meta.json``), else None (all 1).
        class_names: ``{class id: name}`` for ``meta``.
    """

    def __init__(
        self,
        *,
        name: str,
        frames: list[Path],
        labels: list[Path | None],
        void_value: int | None = None,
        categories: dict[int, int] | None = None,
        class_names: dict[int, str] | None = None,
    ) -> None:
        super().__init__()
        if not frames:
            raise DataError(f"{name}: a video needs at least one frame")
        self.name = name
        self.frames = list(frames)
        self.labels = list(labels)
        self.file = str(self.frames[0].parent)
        self.num_frames = len(self.frames)
        self.annotated = np.array([label is not None for label in self.labels], dtype=bool)
        self.void_value = None if void_value is None else int(void_value)
        self.categories = categories
        self.class_names = class_names

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """The frames as ``T x H x W x 3`` uint8 (``read_image``: 16-bit and grey converted)."""
        files = [self.frames[int(t)] for t in indices]
        return stack_frames([read_image(f) for f in files], files)

    def read_labels(self, indices: Sequence[int]) -> np.ndarray:
        """Object-id maps (void pixels set to 0); frames without a label map are all 0."""
        size = None
        maps: list[np.ndarray | None] = []
        for t in indices:
            path = self.labels[int(t)]
            if path is None:
                maps.append(None)
                continue
            label = read_label_map(path)
            frame_size = read_size(self.frames[int(t)])
            if label.shape != frame_size:
                raise DataError(
                    f"{path}: label map is {label.shape[0]}x{label.shape[1]} (HxW) but its frame "
                    f"{self.frames[int(t)].name} is {frame_size[0]}x{frame_size[1]}"
                )
            if self.void_value is not None:
                label = np.where(label == self.void_value, 0, label)
            size = label.shape
            maps.append(label)
        if size is None:
            size = read_size(self.frames[int(indices[0])])
        empty = np.zeros(size, dtype=np.int64)
        return np.stack([empty if m is None else m.astype(np.int64, copy=False) for m in maps])

    def class_ids_of(self, object_ids: np.ndarray) -> np.ndarray:
        """From ``categories`` where given (1 for ids it does not list), else all 1."""
        if not self.categories:
            return super().class_ids_of(object_ids)
        return np.array([self.categories.get(int(i), 1) for i in object_ids], dtype=np.int64)

    def meta(self) -> dict[str, Any]:
        """``file`` (the frame folder), ``video`` and ``class_names`` (when known)."""
        meta = super().meta()
        if self.class_names:
            meta["class_names"] = dict(self.class_names)
        return meta

    def frame_meta(self, indices: Sequence[int]) -> dict[str, Any]:
        """``frame_indices`` (positions in the video) and ``frame_files`` (frame file names)."""
        return {
            "frame_indices": [int(t) for t in indices],
            "frame_files": [self.frames[int(t)].name for t in indices],
        }


def video_source(
    name: str,
    frame_folder: Path,
    label_folder: Path | None,
    *,
    suffixes: Sequence[str],
    problem: Problem,
    **options: Any,
) -> FrameFolderSource | None:
    """The source of one video folder, or None (reported through ``problem``) when it holds no
    frame image."""
    frames = list_files(frame_folder, IMAGE_SUFFIXES)
    if not frames:
        problem(str(frame_folder), f"{frame_folder}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
        return None
    labels = pair_labels(frames, label_folder, suffixes=suffixes, problem=problem)
    return FrameFolderSource(name=name, frames=frames, labels=labels, **options)
