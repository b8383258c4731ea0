"""``ClipDataset``: a map-style dataset of :class:`~samtune.data.clip.Clip`, one item per video.

Without a sampling (evaluation) item ``i`` is video ``i`` whole: every frame and every object,
at the source's own resolution. With a :class:`ClipSampling` (training) item ``i`` is a clip
drawn from video ``i % len(videos)`` (``repeats`` copies of each video per epoch, SAM 2's
``multiplier``) by a generator keyed by ``(seed, epoch, i)``: ``dataset[i]`` is epoch 0 and
``dataset[(epoch, i)]`` any epoch, so a sampler that hands out ``(epoch, index)`` keys (as the
clip datamodules' does) draws the same clips in every worker, rank and resumed run.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from samtune.data.clip import Clip
from samtune.data.datasets.base import SampleDataset
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.datasets.videos.source import VideoSource
from samtune.data.sample import DataError
from samtune.validation import check_number

log = logging.getLogger(__name__)

ClipKey = int | tuple[int, int]


class ClipDataset(SampleDataset):
    """Clips of a list of :class:`VideoSource` (subclasses find the sources).

    Subclasses call :meth:`add_source` for every good video found while indexing and
    :meth:`reject` (from ``SampleDataset``) for bad files; videos too short for a training clip
    or without any annotated frame are left out and counted (``too_short``,
    ``without_annotations``), not treated as bad files.

    ``stats`` counts ``videos``, ``frames``, ``annotated_frames``, ``too_short``,
    ``without_annotations`` and ``skipped``; ``images`` is the number of items.

    Args:
        sampling: how training clips are drawn, or None for whole videos.
        seed: seed of the clip draws.
        repeats: items per video per epoch (training).
        on_error: ``"raise"`` or ``"skip"`` (see ``SampleDataset``).
    """

    accepts_ignore_masks = False

    def __init__(
        self,
        *,
        sampling: ClipSampling | None = None,
        seed: int = 0,
        repeats: int = 1,
        on_error: str = "raise",
    ) -> None:
        super().__init__(on_error=on_error)
        self.sampling = sampling
        self.seed = int(seed)
        self.repeats = check_number("data.repeats", repeats, ge=1, integer=True)
        self.sources: list[VideoSource] = []
        self.counts = {"too_short": 0, "without_annotations": 0}
        self.empty_note: str | None = None

    def add_source(self, source: VideoSource) -> None:
        """Keep ``source`` unless it has no annotated frame or is too short for a clip."""
        if not source.annotated.any():
            self.counts["without_annotations"] += 1
            log.warning("%s: no annotated frame; left out", source.file)
            return
        if self.sampling is not None and source.num_frames < self.sampling.span:
            self.counts["too_short"] += 1
            log.warning(
                "%s: %d frames, fewer than one clip spans (%d); left out",
                source.file,
                source.num_frames,
                self.sampling.span,
            )
            return
        self.sources.append(source)

    def __len__(self) -> int:
        return len(self.sources) * (self.repeats if self.sampling is not None else 1)

    def source(self, index: int) -> VideoSource:
        """The video of item ``index``."""
        return self.sources[index % len(self.sources)]

    def file_of(self, index: int) -> str:
        """The folder or volume of item ``index``."""
        return self.source(index).file

    def __getitem__(self, key: ClipKey) -> Clip | None:
        epoch, index = (0, key) if not isinstance(key, (tuple, list)) else key
        epoch, index = int(epoch), int(index)
        if index < 0 or index >= len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} clips")
        try:
            return self.load(index, epoch=epoch)
        except DataError as err:
            if self.on_error == "raise":
                raise
            self.record_skip(self.file_of(index), str(err), stage="load")
            return None

    def load(self, index: int, *, epoch: int = 0) -> Clip:  # type: ignore[override]
        """Item ``index`` of ``epoch``: the whole video, or a clip drawn from it."""
        source = self.source(index)
        if self.sampling is None:
            return source.clip(range(source.num_frames))
        generator = self.sampling.generator(seed=self.seed, epoch=epoch, index=index)
        frames, objects = self.sampling.draw(source, generator)
        return source.clip(frames, objects)

    @property
    def stats(self) -> dict[str, Any]:
        """Counts of the videos kept and left out (see the class docstring)."""
        return {
            "images": len(self),
            "videos": len(self.sources),
            "frames": int(sum(s.num_frames for s in self.sources)),
            "annotated_frames": int(sum(int(np.sum(s.annotated)) for s in self.sources)),
            **self.counts,
            "skipped": len(self.skipped),
        }

    def subset(self, positions: list[int], *, keep_rejects: bool = False) -> ClipDataset:
        """A dataset of the videos at ``positions`` (indices into ``sources``), same options.

        Args:
            positions: which videos to keep.
            keep_rejects: carry over the bad files found while indexing (give it to one subset).
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.sources = [self.sources[p] for p in positions]
        clone.skipped = list(self.skipped) if keep_rejects else []
        clone.counts = dict(self.counts) if keep_rejects else dict.fromkeys(self.counts, 0)
        return clone

    def with_sampling(self, sampling: ClipSampling | None) -> ClipDataset:
        """The same videos with another sampling (None: whole videos); videos too short for
        its clips are left out and counted."""
        clone = self.subset(list(range(len(self.sources))), keep_rejects=True)
        clone.sampling = sampling
        clone.sources = []
        for source in self.sources:
            clone.add_source(source)
        return clone
