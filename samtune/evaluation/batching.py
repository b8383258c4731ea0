"""Grouping samples into batches of images whose objects are decoded together."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from samtune.data.sample import Sample
from samtune.data.transforms import areas_at_size, kept_area


@dataclass
class ObjectBatch:
    """The objects of a few images, flattened: object ``j`` belongs to image ``img_idx[j]``.

    Attributes:
        samples: the images' samples (empty for a batch made by :meth:`from_masks`).
        keep: per image, the indices of the objects evaluated (non-empty masks).
        gts: per image, ``K_i x H_i x W_i`` bool ground truth of those objects.
        img_idx: ``N`` long, the image of each object (its row in the encoded batch).
        hw: ``N x 2`` float32, ``(H, W)`` of each object's image.
        input_frame: the images are the model's input already (``H = W = S``): prompts need no
            mapping into the input frame.
        ignores: per image, its ``H_i x W_i`` bool not-labelled pixels (scored in neither the
            prediction nor the ground truth), or None; empty when no image has any.
    """

    samples: list[Sample]
    keep: list[np.ndarray]
    gts: list[torch.Tensor]
    img_idx: torch.Tensor
    hw: torch.Tensor
    input_frame: bool = False
    ignores: list[torch.Tensor | None] = field(default_factory=list)

    def ignore_of(self, image: int) -> torch.Tensor | None:
        """The ignore mask of the batch's ``image``-th image, or None."""
        return self.ignores[image] if self.ignores else None

    def split(self, values: torch.Tensor) -> list[torch.Tensor]:
        """Cut an ``N x ...`` tensor into per-image pieces."""
        return list(values.split([len(k) for k in self.keep]))

    @classmethod
    def from_samples(
        cls, items: list[tuple[Sample, np.ndarray]], device: str | torch.device
    ) -> ObjectBatch:
        """Build a batch from ``(sample, kept object indices)`` pairs."""
        gts = [torch.from_numpy(s.masks[keep]).to(device) for s, keep in items]
        img_idx = torch.cat(
            [torch.full((len(k),), i, dtype=torch.long) for i, (_, k) in enumerate(items)]
        )
        hw = torch.tensor(
            [s.image.shape[:2] for s, keep in items for _ in keep], dtype=torch.float32
        ).reshape(-1, 2)
        ignores = [
            None if s.ignore is None else torch.from_numpy(s.ignore).to(device) for s, _ in items
        ]
        return cls(
            samples=[s for s, _ in items],
            keep=[k for _, k in items],
            gts=gts,
            img_idx=img_idx.to(device),
            hw=hw.to(device),
            ignores=ignores if any(i is not None for i in ignores) else [],
        )

    @classmethod
    def from_masks(cls, masks: list[torch.Tensor]) -> ObjectBatch:
        """The objects of a batch of model-input images (a training batch's ``masks``).

        Images without objects have no entry in ``keep`` and ``gts``; ``img_idx`` still gives
        each object's position in ``masks`` (the row of its image's features).

        Args:
            masks: per image, ``K_i x S x S`` masks at the model's input resolution (``K_i``
                may be 0); every object is evaluated, on the masks' device.

        Returns:
            A batch whose "original" resolution is the input resolution S (``input_frame``).
        """
        present = [(i, m) for i, m in enumerate(masks) if m.shape[0] > 0]
        device = masks[0].device if masks else torch.device("cpu")
        idx = [torch.full((m.shape[0],), i, dtype=torch.long) for i, m in present]
        hw = [m.shape[-2:] for _, m in present for _ in range(m.shape[0])]
        return cls(
            samples=[],
            keep=[np.arange(m.shape[0]) for _, m in present],
            gts=[m.bool() for _, m in present],
            img_idx=(torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)).to(device),
            hw=torch.tensor(hw, dtype=torch.float32).reshape(-1, 2).to(device),
            input_frame=True,
        )


@dataclass
class SkipCounter:
    """What the batching left out."""

    images: int = 0
    objects: int = 0
    small_objects: int = 0
    files: list[str] = field(default_factory=list)


def iter_samples(dataset: Iterable, max_images: int | None) -> Iterator[Sample | None]:
    """Items of a map-style dataset (``len`` + indexing) or of any iterable, at most ``max_images``."""
    if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
        n = len(dataset) if max_images is None else min(len(dataset), max_images)
        for i in range(n):
            yield dataset[i]
        return
    for i, sample in enumerate(dataset):
        if max_images is not None and i >= max_images:
            return
        yield sample


def kept_objects(
    sample: Sample | None,
    skipped: SkipCounter,
    *,
    min_object_area: int | None = None,
    image_size: int | None = None,
) -> np.ndarray | None:
    """The indices of the objects of ``sample`` that are scored, or None when none is.

    Empty masks are left out (counted in ``skipped.objects``); with ``min_object_area`` (and
    ``image_size``) so are objects with fewer pixels than that (and at least 1) once resized to
    ``image_size`` as training resizes them (counted in ``skipped.small_objects``):
    ``data.min_object_area`` means the same in training, validation and evaluation. A None
    sample (one the dataset skipped) and an image left without objects count in
    ``skipped.images``.

    Raises:
        TypeError: ``sample`` is neither a Sample nor None.
    """
    if sample is None:
        skipped.images += 1
        return None
    if not isinstance(sample, Sample):
        raise TypeError(f"the dataset must yield samtune Sample objects, got {type(sample)!r}")
    nonempty = sample.masks.reshape(sample.masks.shape[0], -1).any(axis=1)
    skipped.objects += int((~nonempty).sum())
    if min_object_area is not None and image_size is not None and nonempty.any():
        small = nonempty & (areas_at_size(sample.masks, image_size) < kept_area(min_object_area))
        skipped.small_objects += int(small.sum())
        nonempty &= ~small
    if not nonempty.any():
        skipped.images += 1
        skipped.files.append(str(sample.meta.get("file", "?")))
        return None
    return np.flatnonzero(nonempty)


def object_batches(
    dataset: Iterable,
    *,
    image_batch: int,
    device: str | torch.device,
    skipped: SkipCounter,
    max_images: int | None = None,
    min_object_area: int | None = None,
    image_size: int | None = None,
) -> Iterator[ObjectBatch]:
    """Batches of ``image_batch`` images with at least one scored object each.

    Objects are chosen by :func:`kept_objects` (what it leaves out is counted in ``skipped``).

    Raises:
        TypeError: when the dataset yields something other than a Sample.
    """
    pending: list[tuple[Sample, np.ndarray]] = []
    for sample in iter_samples(dataset, max_images):
        keep = kept_objects(sample, skipped, min_object_area=min_object_area, image_size=image_size)
        if keep is None:
            continue
        pending.append((sample, keep))
        if len(pending) == image_batch:
            yield ObjectBatch.from_samples(pending, device)
            pending = []
    if pending:
        yield ObjectBatch.from_samples(pending, device)
