"""Where the random choices of a training batch's prompts come from.

A training step draws its prompts either from one generator for the whole batch, or, in
training runs, from one stream per image keyed by ``(seed, epoch, index of the image in its
dataset)`` plus one stream keyed by ``(seed, epoch, batch index)`` for the choice SAM 2 makes
once per batch (box or click). Keyed streams make an image's prompts independent of the other
images in its batch and of the process it runs in: ``R`` ranks with batch ``b`` draw exactly
the prompts of one process with batch ``R * b``, and a resumed run draws those of an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from samtune.prompts.simulator import Prompts, PromptSimulator


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from the integers ``key``, well mixed (no two keys share a seed
    in practice, unlike sums such as ``seed + epoch``)."""
    if any(int(k) < 0 for k in key):
        raise ValueError(f"keyed_generator: keys must be integers >= 0, got {key!r}")
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass
class PromptStreams:
    """Random streams for one batch: ``batch`` for per-batch choices, ``images`` one per image.

    Attributes:
        batch: draws the box-or-click choice (and everything else when ``images`` is None).
        images: one generator per image of the batch, in batch order, or None.
    """

    batch: torch.Generator
    images: list[torch.Generator] | None = None

    @classmethod
    def keyed(
        cls, *, seed: int, epoch: int, batch_index: int, indices: Sequence[int]
    ) -> PromptStreams:
        """Streams keyed by ``(seed, epoch, batch_index)`` and ``(seed, epoch, index)`` per image."""
        return cls(
            batch=keyed_generator(seed, epoch, 0, batch_index),
            images=[keyed_generator(seed, epoch, 1, int(i)) for i in indices],
        )

    def select_objects(
        self, simulator: PromptSimulator, masks: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Each image's masks reduced to the objects to prompt (see
        :meth:`PromptSimulator.select_objects`); images without objects stay empty."""
        chosen = []
        for i, m in enumerate(masks):
            if m.shape[0] == 0:
                chosen.append(m)
                continue
            generator = self.batch if self.images is None else self.images[i]
            chosen.append(m[simulator.select_objects(m.shape[0], generator=generator).to(m.device)])
        return chosen

    def initial(
        self, simulator: PromptSimulator, gt: torch.Tensor, img_idx: torch.Tensor
    ) -> Prompts:
        """First prompts for the objects ``gt`` (``N x H x W``) of the images ``img_idx``."""
        if self.images is None:
            return simulator.initial(gt, generator=self.batch)
        use_box = simulator.draw_box(self.batch)
        parts = [
            simulator.initial(gt[rows], generator=self.images[i], use_box=use_box)
            for i, rows in _rows_by_image(img_idx)
        ]
        return Prompts(
            point_coords=_cat([p.point_coords for p in parts]),
            point_labels=_cat([p.point_labels for p in parts]),
            boxes=_cat([p.boxes for p in parts]),
            multimask=parts[0].multimask,
        )

    def correction(
        self,
        simulator: PromptSimulator,
        pred: torch.Tensor,
        gt: torch.Tensor,
        img_idx: torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One correction click per object (see :meth:`PromptSimulator.correction`), never
        from an ``ignore`` pixel (``N x H x W`` bool, or None)."""
        if self.images is None:
            return simulator.correction(pred, gt, generator=self.batch, ignore=ignore)
        parts = [
            simulator.correction(
                pred[rows],
                gt[rows],
                generator=self.images[i],
                ignore=None if ignore is None else ignore[rows],
            )
            for i, rows in _rows_by_image(img_idx)
        ]
        return torch.cat([c for c, _ in parts]), torch.cat([lab for _, lab in parts])


def _rows_by_image(img_idx: torch.Tensor) -> list[tuple[int, slice]]:
    """``(image, rows of its objects)`` in order; objects of an image must be contiguous."""
    idx = img_idx.cpu()
    images, counts = torch.unique_consecutive(idx, return_counts=True)
    if len(images) != len(torch.unique(idx)):
        raise ValueError("PromptStreams: the objects of each image must be contiguous in img_idx")
    out, start = [], 0
    for image, count in zip(images.tolist(), counts.tolist()):
        out.append((int(image), slice(start, start + count)))
        start += count
    return out


def _cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if tensors[0] is None else torch.cat(tensors)
