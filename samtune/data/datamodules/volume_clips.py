"""Datamodule for volumes as clips: the slices of each volume along ``axis`` as a video, to tune
and measure SAM 2's memory path on CT/MR/microscopy stacks.

The volumes, their pairing, windowing, label modes and the split by case are those of
``data=volumes`` (:class:`~samtune.data.datamodules.volumes.VolumeDataModule`, which this one
holds); items are :class:`~samtune.data.clip.Clip` instead of slices.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from samtune.data.datamodules.clips import ClipDataModule
from samtune.data.datamodules.volumes import PathList, VolumeDataModule
from samtune.data.datasets.videos import VolumeClipDataset


class VolumeClipDataModule(ClipDataModule):
    """Paired image and label volumes as clips (see :class:`VolumeDataModule` for the volume
    arguments and :class:`ClipDataModule` for the sampling ones).

    With ``start="key"`` a training clip starts at a key slice of one object and runs up or down
    the volume (see :class:`~samtune.data.datasets.videos.ClipSampling`).

    Args:
        images, labels, val_images, val_labels, test_images, test_labels, axis, window,
        normalize, mode, classes, min_area, connectivity, cache_volumes: as ``data=volumes``.
        **kwargs: the :class:`ClipDataModule` arguments.
    """

    def __init__(
        self,
        *,
        images: PathList,
        labels: PathList,
        val_images: PathList | None = None,
        val_labels: PathList | None = None,
        test_images: PathList | None = None,
        test_labels: PathList | None = None,
        axis: int = 2,
        window: str | Mapping[str, Any] | None = None,
        normalize: str | Mapping[str, Any] | None = None,
        mode: str = "instance",
        classes: Mapping[Any, Any] | None = None,
        min_area: int = 1,
        connectivity: int = 8,
        cache_volumes: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.volumes = VolumeDataModule(
            images=images,
            labels=labels,
            val_images=val_images,
            val_labels=val_labels,
            test_images=test_images,
            test_labels=test_labels,
            val_fraction=self.val_fraction,
            axis=axis,
            window=window,
            normalize=normalize,
            mode=mode,
            classes=classes,
            min_area=min_area,
            connectivity=connectivity,
            cache_volumes=cache_volumes,
            image_size=self.image_size,
            on_error=self.on_error,
            seed=self.seed,
        )

    def own_splits(self) -> tuple[str, ...]:
        """train and val (the volumes datamodule splits by case itself), test when given."""
        return ("train", "val") + (("test",) if self.volumes.sources["test"] else ())

    def make_clips(self, split: str) -> VolumeClipDataset:
        """The whole volumes of ``split``."""
        return self.volumes.clip_dataset(split)
