"""``VideoSource``: one video, volume or time-lapse sequence, read frame by frame when asked.

Every clip format is a list of sources. A source knows its frames and which of them carry ground
truth from the listing alone; it reads pixels only for the frames a clip asks for. Its objects
live in per-frame integer label maps whose values are the objects' ids (a VOS palette value, a
relabelled 3D region, a track id), so a clip of ``T`` frames and ``N`` objects costs one
``T x H x W`` label array until :meth:`VideoSource.clip` makes the ``N x T x H x W`` masks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from samtune.data.clip import Clip
from samtune.data.sample import DataError


class VideoSource(ABC):
    """One video (or volume, or sequence) of a clip dataset.

    Attributes:
        name: the video's name (folder name, case name, sequence number).
        file: the folder or volume file it is read from (named in errors and ``meta["file"]``).
        num_frames: ``T``, frames in the whole video.
        annotated: ``T`` bool, the frames that carry ground truth.
    """

    name: str
    file: str
    num_frames: int
    annotated: np.ndarray

    def __init__(self) -> None:
        self._objects_on: dict[int, np.ndarray] = {}

    @abstractmethod
    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` as ``len(indices) x H x W x 3`` uint8.

        Raises:
            DataError: a frame cannot be read or differs in size from the others (naming it).
        """

    @abstractmethod
    def read_labels(self, indices: Sequence[int]) -> np.ndarray:
        """Object-id maps of frames ``indices``, ``len(indices) x H x W`` int64 (0 background,
        all 0 on frames that are not annotated).

        Raises:
            DataError: a label file cannot be read or does not fit its frame (naming it).
        """

    def class_ids_of(self, object_ids: np.ndarray) -> np.ndarray:
        """The class of each object id (1 unless the format knows classes)."""
        return np.ones(len(object_ids), dtype=np.int64)

    def meta(self) -> dict[str, Any]:
        """What every clip of this source carries in ``meta`` (at least ``file``)."""
        return {"file": self.file, "video": self.name}

    def frame_meta(self, indices: Sequence[int]) -> dict[str, Any]:
        """Per-frame ``meta`` entries of a clip of frames ``indices`` (``frame_indices``, and
        ``frame_files`` where frames are files)."""
        return {"frame_indices": [int(t) for t in indices]}

    def objects_on(self, t: int) -> np.ndarray:
        """Sorted ids of the objects with a pixel on frame ``t`` (none on frames without
        annotation); read once per frame and remembered."""
        t = int(t)
        if t not in self._objects_on:
            if not self.annotated[t]:
                self._objects_on[t] = np.zeros(0, dtype=np.int64)
            else:
                ids = np.unique(self.read_labels([t])[0])
                self._objects_on[t] = ids[ids != 0].astype(np.int64)
        return self._objects_on[t]

    def object_areas(self) -> tuple[np.ndarray, np.ndarray]:
        """``(object ids, N x T pixel counts)`` over the whole video (reads every label map)."""
        labels = self.read_labels(range(self.num_frames))
        ids = np.unique(labels)
        ids = ids[ids != 0].astype(np.int64)
        areas = (labels[None] == ids[:, None, None, None]).reshape(len(ids), self.num_frames, -1)
        return ids, areas.sum(axis=2)

    def clip(self, indices: Sequence[int], object_ids: Sequence[int] | None = None) -> Clip:
        """A :class:`Clip` of frames ``indices`` (in that order) and the objects ``object_ids``
        (None: every object with a pixel on one of those frames, by id).

        ``meta`` holds :meth:`meta`, :meth:`frame_meta` and ``clip_id``
        (``"<name>:<first frame>-<last frame>"``).

        Raises:
            DataError: a frame or label file is bad (naming it).
        """
        indices = [int(t) for t in indices]
        if not indices:
            raise ValueError(f"{self.file}: a clip needs at least one frame")
        frames = self.read_frames(indices)
        labels = self.read_labels(indices)
        if labels.shape != frames.shape[:3]:
            raise DataError(
                f"{self.file}: label maps are {labels.shape[1:]} but frames are {frames.shape[1:3]}"
            )
        if object_ids is None:
            ids = np.unique(labels)
            ids = ids[ids != 0].astype(np.int64)
        else:
            ids = np.asarray(object_ids, dtype=np.int64).reshape(-1)
        meta = {
            **self.meta(),
            **self.frame_meta(indices),
            "clip_id": f"{self.name}:{indices[0]}-{indices[-1]}",
        }
        return Clip.from_label_maps(
            frames,
            labels,
            ids,
            class_ids=self.class_ids_of(ids),
            annotated=self.annotated[indices],
            meta=meta,
        )

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the remembered per-frame objects (each worker finds its own)."""
        state = self.__dict__.copy()
        state["_objects_on"] = {}
        return state


def stack_frames(frames: list[np.ndarray], files: Sequence[Any]) -> np.ndarray:
    """Stack ``H x W x 3`` frames, refusing one whose size differs from the first (naming it)."""
    first = frames[0].shape
    for frame, file in zip(frames, files):
        if frame.shape != first:
            raise DataError(
                f"{file}: frame is {frame.shape[0]}x{frame.shape[1]} (HxW) but the video's first "
                f"frame {files[0]} is {first[0]}x{first[1]}"
            )
    return np.stack(frames)
