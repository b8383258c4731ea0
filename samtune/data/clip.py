"""``Clip``: T frames of a video, a time-lapse or a volume's slices, with objects kept across frames.

The sibling of :class:`~samtune.data.sample.Sample` for SAM 2's memory path: where a sample is
one image and its objects, a clip is an ordered run of frames and, per object, one mask per frame.
An object may be absent on some frames (occlusion, an organ that ends); a frame may carry no
annotation at all (sparse ground truth), and such a frame is neither scored nor supervised.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from samtune.data.sample import DataError, Sample


@dataclass
class Clip:
    """An ordered run of frames and its objects.

    Attributes:
        frames: ``T x H x W x 3`` uint8 RGB, every frame the same size.
        masks: ``N x T x H x W`` bool, object ``n`` on frame ``t`` (all False where it is absent
            or where the frame is not annotated).
        object_ids: ``N`` ints, each object's identity as the source numbers it (VOS palette
            value, label value, track id); stable across the clips of one video or volume.
        annotated: ``T`` bool, the frames that carry ground truth. Frames without it are not
            scored and not supervised.
        class_ids: ``N`` ints, the class of each object (1 when there is a single class).
        meta: at least ``file`` (the video folder or volume file) and ``clip_id``; readers add
            ``frame_files`` or ``frame_indices`` (the source's frame numbers), ``spacing``
            (per-axis voxel size, ``(frame axis, row, column)``, with ``spacing_unit``) for
            volumes, ``class_names``...
    """

    frames: np.ndarray
    masks: np.ndarray
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    annotated: np.ndarray | None = None
    class_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.meta.get("file", "<unknown clip>")
        if self.frames.ndim != 4 or self.frames.shape[3] != 3 or self.frames.dtype != np.uint8:
            raise DataError(
                f"{where}: frames must be T x H x W x 3 uint8, got "
                f"{self.frames.shape} {self.frames.dtype}"
            )
        t, h, w = self.frames.shape[:3]
        if self.masks.ndim != 4 or self.masks.shape[1:] != (t, h, w):
            raise DataError(
                f"{where}: masks must be N x {t} x {h} x {w} (objects x frames x H x W), got "
                f"{tuple(self.masks.shape)}"
            )
        if self.masks.dtype != bool:
            self.masks = self.masks.astype(bool)
        n = self.masks.shape[0]
        if self.object_ids.size == 0 and n > 0:
            self.object_ids = np.arange(1, n + 1, dtype=np.int64)
        if self.class_ids.size == 0 and n > 0:
            self.class_ids = np.ones(n, dtype=np.int64)
        if self.annotated is None:
            self.annotated = np.ones(t, dtype=bool)
        self.annotated = np.asarray(self.annotated, dtype=bool)
        for name, values, size in (
            ("object_ids", self.object_ids, n),
            ("class_ids", self.class_ids, n),
            ("annotated", self.annotated, t),
        ):
            if len(values) != size:
                raise DataError(f"{where}: {len(values)} {name} for {size} entries")

    @property
    def num_frames(self) -> int:
        """T."""
        return int(self.frames.shape[0])

    @property
    def present(self) -> np.ndarray:
        """``N x T`` bool: whether each object has a pixel on each frame."""
        return self.masks.reshape(self.masks.shape[0], self.num_frames, -1).any(axis=2)

    def frame(self, t: int) -> Sample:
        """Frame ``t`` as a :class:`Sample` holding the objects present on it (ids in
        ``meta["object_ids"]``, the frame index in ``meta["frame"]``)."""
        keep = np.flatnonzero(self.present[:, t])
        meta = {
            **self.meta,
            "frame": int(t),
            "object_ids": self.object_ids[keep].tolist(),
            "image_id": f"{self.meta.get('clip_id', self.meta.get('file', 'clip'))}:{t}",
        }
        return Sample(
            image=self.frames[t],
            masks=self.masks[keep, t],
            class_ids=self.class_ids[keep],
            meta=meta,
        )

    @classmethod
    def from_label_maps(
        cls,
        frames: np.ndarray,
        labels: np.ndarray,
        object_ids: Sequence[int] | np.ndarray,
        *,
        class_ids: Sequence[int] | np.ndarray | None = None,
        annotated: Sequence[bool] | np.ndarray | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Clip:
        """A clip from ``T x H x W`` integer label maps: object ``n`` is ``labels == object_ids[n]``.

        Label maps are how every clip source stores its objects (a VOS palette value, a
        relabelled 3D region, a track id); the ``N x T x H x W`` masks are made here, once, for
        the objects asked for only.

        Args:
            frames: ``T x H x W x 3`` uint8.
            labels: ``T x H x W`` integers, 0 background (and on frames that are not annotated).
            object_ids: the ids to turn into objects, in clip order.
            class_ids: one per object (default all 1).
            annotated: ``T`` bool (default all True).
            meta: the clip's ``meta``.

        Raises:
            DataError: label maps of another size than the frames (naming ``meta["file"]``).
        """
        meta = dict(meta or {})
        labels = np.asarray(labels)
        if labels.shape != frames.shape[:3]:
            raise DataError(
                f"{meta.get('file', '<unknown clip>')}: label maps are {tuple(labels.shape)} but "
                f"the frames are {tuple(frames.shape[:3])} (T x H x W)"
            )
        ids = np.asarray(object_ids, dtype=np.int64).reshape(-1)
        masks = labels[None] == ids[:, None, None, None]
        return cls(
            frames=frames,
            masks=masks,
            object_ids=ids,
            annotated=None if annotated is None else np.asarray(annotated, dtype=bool),
            class_ids=np.zeros(0, np.int64)
            if class_ids is None
            else np.asarray(class_ids, dtype=np.int64).reshape(-1),
            meta=meta,
        )

    def sub(self, frames: Sequence[int] | np.ndarray) -> Clip:
        """The clip cut to the frames ``frames`` (clip positions, any order: reversed runs and
        strides are cuts too); the objects stay. ``meta["frame_indices"]`` and
        ``meta["frame_files"]``, when present, are cut alike."""
        index = np.asarray(frames, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -self.num_frames or index.max() >= self.num_frames):
            raise IndexError(
                f"frames {index.tolist()} out of range for a clip of {self.num_frames}"
            )
        meta = dict(self.meta)
        for key in ("frame_indices", "frame_files"):
            if key in meta and len(meta[key]) == self.num_frames:
                meta[key] = [meta[key][int(t)] for t in index]
        return replace(
            self,
            frames=self.frames[index],
            masks=self.masks[:, index],
            annotated=self.annotated[index],
            meta=meta,
        )

    def reversed(self) -> Clip:
        """The clip with time reversed (frame ``T - 1`` first)."""
        return self.sub(np.arange(self.num_frames - 1, -1, -1))

    def with_objects(self, keep: Sequence[int] | np.ndarray) -> Clip:
        """The clip holding only the objects at positions ``keep`` (in that order)."""
        index = np.asarray(keep, dtype=np.int64).reshape(-1)
        return replace(
            self,
            masks=self.masks[index],
            object_ids=self.object_ids[index],
            class_ids=self.class_ids[index],
        )
