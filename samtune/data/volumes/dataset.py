"""``VolumeSliceDataset``: 2D ``Sample``s from the slices of paired image and label volumes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from samtune.data.sample import DataError, Sample
from samtune.data.volumes.intensity import IntensityMap, resolve_intensity
from samtune.data.volumes.labels import MODES, validate_classes
from samtune.data.volumes.readers import VolumePair, pair_volumes, read_volume
from samtune.data.volumes.slicing import (
    check_axis,
    select_slices,
    slice_to_sample,
    slice_view,
    slices_with_objects,
)

PathList = str | Path | list[str | Path] | tuple[str | Path, ...]


class VolumeSliceDataset(Dataset[Sample]):
    """All kept 2D slices of all paired volumes, each as a ``Sample``.

    At construction the volumes are paired and their headers checked (shape, spacing,
    orientation; see ``pair_volumes``), and each label volume is read once to find the slices
    that hold objects; image volumes are read only when a slice of theirs is requested. The
    last ``cache_volumes`` volumes read (uint8 image and label) stay in memory: iterate in
    order, or with a sampler that groups slices by volume, to read each volume once per epoch.

    Each ``Sample.meta`` holds ``file`` (the image volume), ``label_file``, ``image_id`` (the
    sample's index, unique within the dataset), ``volume`` (case name), ``slice``, ``axis``,
    ``class_names``, ``spacing`` (the volume's 3 voxel sizes in mm, ``i, j, k``) and
    ``pixel_spacing`` (the slice's row and column sizes in mm). Kept slices without objects
    have zero masks.

    Args:
        images: a folder of image volumes (``.nii``/``.nii.gz`` files, DICOM series folders)
            or a list of them.
        labels: the same for the label volumes; paired by case name (see ``case_name``).
        axis: the array axis to slice along (0, 1 or 2; 2 is axial for usual CT/MR).
        window: CT window preset name or ``{"level", "width"}`` (see ``resolve_intensity``).
        normalize: ``"percentile"`` or a mapping; used when ``window`` is None (the default).
        mode: ``"instance"`` or ``"semantic"`` objects (see ``objects_from_label_slice``).
        classes: ``{label value: name}``; other values are ignored. None: every value.
        empty_slice_rate: probability of keeping a slice without objects (see ``select_slices``).
        min_area: objects with fewer pixels are dropped.
        seed: seed for choosing the empty slices.
        connectivity: 8 or 4, for instance components.
        cache_volumes: how many volumes to keep in memory (at least 1).

    Raises:
        DataError: pairing or header checks fail, or a label volume cannot be read.
        ValueError: an invalid option.
    """

    def __init__(
        self,
        *,
        images: PathList,
        labels: PathList,
        axis: int = 2,
        window: str | Mapping[str, Any] | None = None,
        normalize: str | Mapping[str, Any] | None = None,
        mode: str = "instance",
        classes: Mapping[Any, Any] | None = None,
        empty_slice_rate: float = 0.0,
        min_area: int = 1,
        seed: int = 0,
        connectivity: int = 8,
        cache_volumes: int = 2,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        if int(min_area) < 1:
            raise ValueError(f"min_area must be >= 1, got {min_area!r}")
        if int(cache_volumes) < 1:
            raise ValueError(f"cache_volumes must be >= 1, got {cache_volumes!r}")
        self.axis = check_axis(axis)
        self.intensity: IntensityMap = resolve_intensity(window=window, normalize=normalize)
        self.mode = mode
        self.classes = validate_classes(classes)
        self.empty_slice_rate = float(empty_slice_rate)
        self.min_area = int(min_area)
        self.seed = int(seed)
        self.connectivity = connectivity
        self.cache_volumes = int(cache_volumes)
        self.pairs: list[VolumePair] = pair_volumes(images, labels)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._index: list[tuple[int, int]] = []
        for volume_index, pair in enumerate(self.pairs):
            label = read_volume(pair.label, label=True)
            has = slices_with_objects(
                label.array,
                axis=self.axis,
                mode=self.mode,
                classes=self.classes,
                min_area=self.min_area,
                connectivity=self.connectivity,
            )
            kept = select_slices(
                has,
                empty_slice_rate=self.empty_slice_rate,
                seed=self.seed,
                key=f"{pair.case}:axis{self.axis}",
            )
            self._index.extend((volume_index, int(k)) for k in kept)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        volume_index, slice_index = self._index[index]
        pair = self.pairs[volume_index]
        image, label = self._volume(volume_index)
        spacing = tuple(float(s) for s in pair.geometry.spacing)
        meta = {
            "file": str(pair.image),
            "label_file": str(pair.label),
            "image_id": index % len(self),
            "volume": pair.case,
            "slice": slice_index,
            "axis": self.axis,
            "spacing": spacing,
            "pixel_spacing": tuple(s for a, s in enumerate(spacing) if a != self.axis),
        }
        return slice_to_sample(
            slice_view(image, axis=self.axis, index=slice_index),
            slice_view(label, axis=self.axis, index=slice_index),
            mode=self.mode,
            classes=self.classes,
            min_area=self.min_area,
            connectivity=self.connectivity,
            meta=meta,
        )

    @property
    def cases(self) -> list[str]:
        """The case names, in dataset order."""
        return [pair.case for pair in self.pairs]

    @property
    def volume_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``{case: shape}`` of every volume (for ``stack_slice_predictions``)."""
        return {pair.case: pair.geometry.shape for pair in self.pairs}

    def slices_of(self, case: str) -> list[int]:
        """The kept slice indices of one case, in order."""
        volume_index = self._volume_index(case)
        return [k for v, k in self._index if v == volume_index]

    def label_volume(self, case: str) -> np.ndarray:
        """The full label volume of one case (for per-volume evaluation)."""
        return self._volume(self._volume_index(case))[1]

    def _volume_index(self, case: str) -> int:
        for volume_index, pair in enumerate(self.pairs):
            if pair.case == case:
                return volume_index
        raise KeyError(f"no volume named {case!r}; cases are {self.cases}")

    def _volume(self, volume_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 image and the label volume, read (and cached) on first use."""
        if volume_index in self._cache:
            self._cache.move_to_end(volume_index)
            return self._cache[volume_index]
        pair = self.pairs[volume_index]
        image = read_volume(pair.image)
        label = read_volume(pair.label, label=True)
        if image.array.shape != label.array.shape:
            raise DataError(
                f"shape mismatch: image {pair.image} is {image.array.shape} but label {pair.label} "
                f"is {label.array.shape}"
            )
        entry = (self.intensity(image.array), label.array)
        self._cache[volume_index] = entry
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)
        return entry

    def __getstate__(self) -> dict[str, Any]:
        """Drop the volume cache when pickled (DataLoader workers start with an empty cache)."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state
