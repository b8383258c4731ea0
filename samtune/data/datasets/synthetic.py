"""Bright ellipses on a noisy background: a deterministic dataset for smoke runs and tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samtune.data.datasets.base import SampleDataset
from samtune.data.sample import Sample

_PLACEMENT_TRIES = 20


class SyntheticDataset(SampleDataset):
    """``num_images`` images of ``size`` with between ``objects[0]`` and ``objects[1]`` ellipses.

    Item ``i`` depends only on ``(seed, i)``: the same in every process and run. Ellipses do not
    overlap (a placement that would is retried, and left out after a few tries, so an image may
    hold fewer objects than drawn). Each has its own colour, 150-255 per channel, on a 0-39
    uniform noise background. ``meta`` holds ``file`` (``"synthetic/<seed>/<i>.png"``, no such
    file exists), ``image_id`` and ``orig_size``.

    Args:
        num_images: number of images.
        size: ``(height, width)``, each at least 16.
        objects: inclusive range of the number of ellipses per image, ``1 <= low <= high``.
        radius: range of an ellipse's semi-axes as fractions of the image's height (rows) and
            width (columns), ``0 < low <= high``.
        seed: seed of the whole dataset.
    """

    def __init__(
        self,
        *,
        num_images: int = 8,
        size: Sequence[int] = (96, 128),
        objects: Sequence[int] = (1, 4),
        radius: Sequence[float] = (0.06, 0.16),
        seed: int = 0,
    ) -> None:
        super().__init__(on_error="raise", min_area=1)
        size, objects = tuple(int(v) for v in size), tuple(int(v) for v in objects)
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be (height, width) with both >= 16, got {size!r}")
        if len(objects) != 2 or not 1 <= objects[0] <= objects[1]:
            raise ValueError(f"objects must be (low, high) with 1 <= low <= high, got {objects!r}")
        radius = tuple(float(v) for v in radius)
        if len(radius) != 2 or not 0.0 < radius[0] <= radius[1]:
            raise ValueError(f"radius must be (low, high) with 0 < low <= high, got {radius!r}")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images!r}")
        self.num_images, self.size, self.objects, self.seed = (
            int(num_images),
            size,
            objects,
            int(seed),
        )
        self.radius = radius
        self.counts["images"] = self.num_images
        self.counts["objects"] = sum(len(self._ellipses(i)) for i in range(self.num_images))

    def __len__(self) -> int:
        return self.num_images

    def file_of(self, index: int) -> str:
        """A made-up name for item ``index``."""
        return f"synthetic/{self.seed}/{index}.png"

    def load(self, index: int) -> Sample:
        """Draw image ``index``."""
        height, width = self.size
        rng = np.random.default_rng([self.seed, index, 1])
        image = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
        masks = np.zeros((0, height, width), dtype=bool)
        ellipses = self._ellipses(index)
        if ellipses:
            masks = np.stack([mask for mask, _ in ellipses])
            for mask, colour in ellipses:
                image[mask] = colour
        meta = {"file": self.file_of(index), "image_id": index, "orig_size": (height, width)}
        return Sample(image=image, masks=masks, meta=meta)

    def _ellipses(self, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Non-overlapping ellipse masks and colours of item ``index`` (deterministic)."""
        height, width = self.size
        rng = np.random.default_rng([self.seed, index, 0])
        wanted = int(rng.integers(self.objects[0], self.objects[1] + 1))
        yy, xx = np.mgrid[:height, :width]
        taken = np.zeros((height, width), dtype=bool)
        ellipses = []
        for _ in range(wanted):
            for _ in range(_PLACEMENT_TRIES):
                cy, cx = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
                ry, rx = rng.uniform(*self.radius) * height, rng.uniform(*self.radius) * width
                mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
                if mask.any() and not (mask & taken).any():
                    taken |= mask
                    ellipses.append((mask, rng.integers(150, 256, size=3).astype(np.uint8)))
                    break
        return ellipses
