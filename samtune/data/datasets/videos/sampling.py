"""Which frames and objects a training clip holds: SAM 2's ``RandomUniformSampler``, keyed.

``start="random"`` is SAM 2's sampler (``training/dataset/vos_sampler.py``): a run of
``num_frames`` consecutive frames (every ``stride``-th) from a uniform start, time reversed with
probability ``reverse_time_prob``, drawn again until its first frame holds an object; then up to
``max_num_objects`` of the objects on that first frame, uniformly. Here the first frame must also
be annotated, and a start whose first frame is known to be empty is never tried twice, so a video
without any usable first frame fails after at most one look at each frame instead of 1000 draws.

``start="key"`` (volumes, as MedSAM2 prompts a volume): one object is drawn uniformly among the
video's objects, the clip starts at its key slice (``key_slice``: ``largest`` area, ``middle`` of
its extent, or a ``random`` slice holding it) and runs ``num_frames`` slices forwards or
backwards (probability 0.5 each; the other way when one does not fit). Over draws a volume is
propagated both ways from its key slices. Only key slices from which a run fits one way are
considered. Up to ``max_num_objects - 1`` more objects present on the key slice join it.

Every random choice comes from a generator keyed by ``(seed, epoch, index)``
(:func:`samtune.prompts.streams.keyed_generator`), so an item draws the same clip whatever
worker, rank or resumed run reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from samtune.data.datasets.videos.source import VideoSource
from samtune.data.sample import DataError
from samtune.prompts.streams import keyed_generator
from samtune.validation import check_choice, check_number, check_probability

STARTS = ("random", "key")
KEY_SLICES = ("largest", "middle", "random")
CLIP_STREAM = 3  # a tag of its own beside the prompt (0, 1) and augmentation (2) streams
MAX_TRIES = 1000  # as SAM 2's sampler


@dataclass(frozen=True)
class ClipSampling:
    """How training clips are drawn from a video (defaults: SAM 2.1's MOSE fine-tune recipe).

    Attributes:
        num_frames: frames per clip (``scratch.num_frames: 8``).
        stride: take every ``stride``-th frame (1: consecutive frames).
        max_num_objects: at most this many objects per clip (``scratch.max_num_objects: 3``).
        reverse_time_prob: probability of playing the clip backwards (``start="random"``).
        start: ``"random"`` (SAM 2's sampler) or ``"key"`` (start at a key slice).
        key_slice: ``"largest"``, ``"middle"`` or ``"random"`` (with ``start="key"``).
    """

    num_frames: int = 8
    stride: int = 1
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0
    start: str = "random"
    key_slice: str = "largest"

    def __post_init__(self) -> None:
        checked = {
            "num_frames": check_number("data.num_frames", self.num_frames, ge=1, integer=True),
            "stride": check_number("data.stride", self.stride, ge=1, integer=True),
            "max_num_objects": check_number(
                "data.max_num_objects", self.max_num_objects, ge=1, integer=True
            ),
            "reverse_time_prob": check_probability(
                "data.reverse_time_prob", self.reverse_time_prob
            ),
            "start": check_choice("data.start", self.start, STARTS),
            "key_slice": check_choice("data.key_slice", self.key_slice, KEY_SLICES),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def span(self) -> int:
        """Frames of the video one clip covers: ``(num_frames - 1) * stride + 1``."""
        return (int(self.num_frames) - 1) * int(self.stride) + 1

    def generator(self, *, seed: int, epoch: int, index: int) -> torch.Generator:
        """The generator of item ``index`` in ``epoch``.

        Its key has five words, so it equals none of the four-word keys of the prompt and
        augmentation streams whatever the epoch and index.
        """
        return keyed_generator(int(seed), CLIP_STREAM, int(epoch), int(index), 0)

    def draw(self, source: VideoSource, generator: torch.Generator) -> tuple[list[int], list[int]]:
        """``(frame indices in clip order, object ids)`` of one training clip of ``source``.

        Raises:
            DataError: the video is shorter than a clip, or no annotated frame that can start a
                clip holds an object (naming the video).
        """
        if source.num_frames < self.span:
            raise DataError(
                f"{source.file}: {source.num_frames} frames, fewer than a clip of "
                f"{self.num_frames} frames at stride {self.stride} needs ({self.span})"
            )
        if self.start == "key":
            return self._draw_key(source, generator)
        return self._draw_random(source, generator)

    def _window(self, first: int, direction: int) -> list[int]:
        return [first + direction * self.stride * i for i in range(self.num_frames)]

    def _draw_random(
        self, source: VideoSource, generator: torch.Generator
    ) -> tuple[list[int], list[int]]:
        starts = source.num_frames - self.span + 1
        empty: set[int] = set()
        candidates = set(range(starts))
        if self.reverse_time_prob > 0:
            candidates |= {s + self.span - 1 for s in range(starts)}
        for _ in range(MAX_TRIES):
            start = int(torch.randint(starts, (1,), generator=generator))
            reverse = float(torch.rand(1, generator=generator)) < self.reverse_time_prob
            frames = self._window(start, 1)
            if reverse:
                frames = frames[::-1]
            visible = source.objects_on(frames[0])
            if len(visible):
                return frames, self._objects(visible, generator)
            empty.add(frames[0])
            if empty >= candidates:
                break
        raise DataError(
            f"{source.file}: no annotated frame that can start a clip of {self.num_frames} "
            f"frames (stride {self.stride}) holds an object"
        )

    def _draw_key(
        self, source: VideoSource, generator: torch.Generator
    ) -> tuple[list[int], list[int]]:
        ids, areas = source.object_areas()
        frames = np.arange(source.num_frames)
        forward_fits = frames + self.span - 1 < source.num_frames
        backward_fits = frames - self.span + 1 >= 0
        fits = (forward_fits | backward_fits) & source.annotated
        usable = [n for n in range(len(ids)) if (areas[n] > 0)[fits].any()]
        if not usable:
            raise DataError(
                f"{source.file}: no object has a slice from which a clip of {self.num_frames} "
                f"slices (stride {self.stride}) fits"
            )
        n = usable[int(torch.randint(len(usable), (1,), generator=generator))]
        present = np.flatnonzero((areas[n] > 0) & fits)
        if self.key_slice == "largest":
            key = int(present[np.argmax(areas[n][present])])
        elif self.key_slice == "middle":
            extent = np.flatnonzero(areas[n] > 0)
            middle = (extent[0] + extent[-1]) / 2
            key = int(present[np.argmin(np.abs(present - middle))])
        else:
            key = int(present[int(torch.randint(len(present), (1,), generator=generator))])
        backward = float(torch.rand(1, generator=generator)) < 0.5
        if backward and not backward_fits[key]:
            backward = False
        elif not backward and not forward_fits[key]:
            backward = True
        window = self._window(key, -1 if backward else 1)
        others = [int(i) for i in ids[areas[:, key] > 0] if int(i) != int(ids[n])]
        chosen = [int(ids[n])]
        if others and self.max_num_objects > 1:
            chosen += self._objects(np.asarray(others), generator, self.max_num_objects - 1)
        return window, sorted(chosen)

    def _objects(
        self, visible: np.ndarray, generator: torch.Generator, limit: int | None = None
    ) -> list[int]:
        limit = self.max_num_objects if limit is None else limit
        order = torch.randperm(len(visible), generator=generator)[: min(len(visible), limit)]
        return sorted(int(visible[int(i)]) for i in order)
