"""``Clip``: T frames of a video, a time-lapse or a volume's slices, with objects kept across frames.

The sibling of :class:`~samtune.data.sample.Sample` for SAM 2's memory path: where a sample is
one image and its objects, a clip is an ordered run of frames and, per object, one mask per frame.
An object may be absent on some frames (occlusion, an organ that ends); a frame may carry no
annotation at all (sparse ground truth), and such a frame is neither scored nor supervised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
