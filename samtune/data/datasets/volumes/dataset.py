"""``VolumeSliceDataset``: 2D ``Sample``s from the slices of paired image and label volumes."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from samtune.data.datasets.base import SampleDataset
from samtune.data.datasets.volumes.intensity import IntensityMap, resolve_intensity
from samtune.data.datasets.volumes.labels import MODES, validate_classes
from samtune.data.datasets.volumes.pairing import (
    VolumePair,
    VolumePairing,
    pair_volumes,
    structure_name,
)
from samtune.data.datasets.volumes.readers import read_volume
from samtune.data.datasets.volumes.slicing import (
    check_axis,
    select_slices,
    slice_to_sample,
    slice_view,
    slices_with_objects,
)
from samtune.data.datasets.volumes.volume import Volume
from samtune.data.pairing import Pairing, PairRow
from samtune.data.sample import DataError, Sample

PathList = str | Path | list[str | Path] | tuple[str | Path, ...]


class VolumeSliceDataset(SampleDataset):
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

    Bad data follows ``on_error`` (see ``SampleDataset``): with ``"skip"`` a case whose pairing
    or header check fails, or whose label volume cannot be read, is left out at construction,
    and the slices of an image volume that cannot be read are None items; each bad file is
    recorded in ``skipped`` (an unreadable volume is read only once). ``stats`` counts
    ``images`` (kept slices), ``volumes``, ``slices_with_objects`` and ``dropped_images``
    (slices without objects left out by ``empty_slice_rate``).

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
        on_error: ``"raise"`` or ``"skip"``.
        pairing: how images find their labels (see ``VolumePairing``); None: by case name.
        pairs: the pairs themselves (already paired and checked); ``images`` and ``labels``
            are then unused.

    A case with two or three image files (``VolumePair.channels``) reads each through the
    intensity map and stacks them as R, G, B (a missing third channel black; one chosen file
    is read as a grey image); a case with one mask
    file per structure (``VolumePair.structures``) reads them as one label map whose classes
    are the structures, numbered 1, 2, ... in name order over the dataset (a voxel in two
    structures goes to the later name).

    Raises:
        DataError: (``on_error="raise"``) pairing or header checks fail, or a label volume
            cannot be read.
        ValueError: an invalid option.
    """

    accepts_ignore_masks = False

    def __init__(
        self,
        *,
        images: PathList | None = None,
        labels: PathList | None = None,
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
        on_error: str = "raise",
        pairing: VolumePairing | None = None,
        pairs: list[VolumePair] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        if int(min_area) < 1:
            raise ValueError(f"min_area must be >= 1, got {min_area!r}")
        if int(cache_volumes) < 1:
            raise ValueError(f"cache_volumes must be >= 1, got {cache_volumes!r}")
        super().__init__(on_error=on_error, min_area=int(min_area))
        self.axis = check_axis(axis)
        self.intensity: IntensityMap = resolve_intensity(window=window, normalize=normalize)
        self.mode = mode
        self.classes = validate_classes(classes)
        self.empty_slice_rate = float(empty_slice_rate)
        self.seed = int(seed)
        self.connectivity = connectivity
        self.cache_volumes = int(cache_volumes)
        problems: list[tuple[str, str]] | None = [] if on_error == "skip" else None
        if pairs is not None:
            paired = list(pairs)
        elif images is None or labels is None:
            paired = []
        else:
            paired = pair_volumes(images, labels, problems=problems, pairing=pairing)
        for file, message in problems or []:
            self.reject(file, message)
        self.pairing = Pairing(
            rule=(pairing or VolumePairing()).rule,
            rows=[
                PairRow(
                    id=p.case,
                    image=p.image,
                    mask=p.structures[0].parent if p.structures else p.label,
                    split=p.split,
                )
                for p in paired
            ],
            unpaired=len(problems or []),
        )
        names = sorted({structure_name(f) for p in paired for f in p.structures})
        self.structure_ids = {name: index for index, name in enumerate(names, start=1)}
        if names:
            if self.classes is not None:
                raise ValueError(
                    "the labels are one mask file per structure, named by structure; the classes "
                    f"are those names ({', '.join(names)}): leave data.classes out"
                )
            self.classes = dict(enumerate(names, start=1))
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._failed: dict[int, str] = {}
        self._index: list[tuple[int, int]] = []
        self.pairs: list[VolumePair] = []
        self._with_objects: list[int] = []
        for pair in paired:
            try:
                label = self._read_label(pair)
            except DataError as err:
                self.reject(str(pair.label), str(err))
                continue
            volume_index = len(self.pairs)
            self.pairs.append(pair)
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
            self._with_objects.append(int(has.sum()))
        self._count()

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> Sample | None:
        if -len(self) <= index < 0:
            index += len(self)
        return super().__getitem__(index)

    def file_of(self, index: int) -> str:
        """The image volume of slice item ``index``."""
        return str(self.pairs[self._index[index][0]].image)

    def slice_at(self, index: int) -> tuple[str, int]:
        """``(case, slice index)`` of item ``index`` (its ``meta["volume"]`` and ``["slice"]``)."""
        volume_index, slice_index = self._index[index]
        return self.pairs[volume_index].case, slice_index

    def load(self, index: int) -> Sample:
        """Slice item ``index`` as a ``Sample`` (reads its volumes on first use)."""
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

    def image_volume(self, case: str) -> np.ndarray:
        """The full image volume of one case, as the uint8 the slices are cut from.

        Raises:
            DataError: the image volume cannot be read or its shape differs from the label's.
        """
        return self._volume(self._volume_index(case))[0]

    def subset(self, cases: list[str], *, keep_rejects: bool = False) -> VolumeSliceDataset:
        """A dataset of only the listed cases (their kept slices, in this dataset's order).

        Args:
            cases: case names of this dataset.
            keep_rejects: carry over the bad files recorded while indexing (give it to exactly
                one of the subsets made from a dataset, so each is reported once).

        Raises:
            KeyError: a case that is not in this dataset.
        """
        wanted = [self._volume_index(case) for case in cases]
        keep = sorted(set(wanted))
        renumber = {old: new for new, old in enumerate(keep)}
        clone = copy.copy(self)
        clone.pairs = [self.pairs[v] for v in keep]
        clone._with_objects = [self._with_objects[v] for v in keep]
        clone._index = [(renumber[v], k) for v, k in self._index if v in renumber]
        clone._cache = OrderedDict()
        clone._failed = {renumber[v]: m for v, m in self._failed.items() if v in renumber}
        clone.skipped = list(self.skipped) if keep_rejects else []
        clone._count()
        return clone

    def _count(self) -> None:
        slices = sum(pair.geometry.shape[self.axis] for pair in self.pairs)
        self.counts = {
            "images": len(self._index),
            "volumes": len(self.pairs),
            "slices_with_objects": sum(self._with_objects),
            "dropped_images": slices - len(self._index),
        }

    def _volume_index(self, case: str) -> int:
        for volume_index, pair in enumerate(self.pairs):
            if pair.case == case:
                return volume_index
        raise KeyError(f"no volume named {case!r}; cases are {self.cases}")

    def _volume(self, volume_index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 image and the label volume, read (and cached) on first use.

        A volume that failed to read raises the same ``DataError`` again without re-reading.
        """
        if volume_index in self._cache:
            self._cache.move_to_end(volume_index)
            return self._cache[volume_index]
        if volume_index in self._failed:
            raise DataError(self._failed[volume_index])
        pair = self.pairs[volume_index]
        try:
            image = self._read_image(pair)
            label = self._read_label(pair)
            if image.shape[:3] != label.array.shape:
                raise DataError(
                    f"shape mismatch: image {pair.image} is {image.shape[:3]} but label "
                    f"{pair.label} is {label.array.shape}"
                )
        except DataError as err:
            self._failed[volume_index] = str(err)
            raise
        entry = (image, label.array)
        self._cache[volume_index] = entry
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)
        return entry

    def _read_image(self, pair: VolumePair) -> np.ndarray:
        """The uint8 image volume, ``[i, j, k]`` (one sequence, grey) or ``[i, j, k, 3]`` for
        two or three channels."""
        if len(pair.channels) <= 1:  # one chosen sequence is the image itself
            return self.intensity(read_volume(pair.image).array)
        channels = [self.intensity(read_volume(path).array) for path in pair.channels]
        shape = channels[0].shape
        for path, channel in zip(pair.channels, channels):
            if channel.shape != shape:
                raise DataError(
                    f"shape mismatch: channel {path} is {channel.shape} but {pair.channels[0]} "
                    f"is {shape}"
                )
        while len(channels) < 3:
            channels.append(np.zeros(shape, np.uint8))
        return np.stack(channels, axis=-1)

    def _read_label(self, pair: VolumePair):
        """The label volume; per-structure masks merged into one map of structure ids."""
        if not pair.structures:
            return read_volume(pair.label, label=True)
        merged = None
        for path in sorted(pair.structures, key=structure_name):
            mask = read_volume(path, label=True)
            if merged is None:
                merged = Volume(
                    array=np.zeros(mask.array.shape, np.uint16),
                    spacing=mask.spacing,
                    affine=mask.affine,
                    path=pair.label,
                    spacing_unit=mask.spacing_unit,
                )
            elif mask.array.shape != merged.array.shape:
                raise DataError(
                    f"shape mismatch: structure {path} is {mask.array.shape} but "
                    f"{pair.structures[0]} is {merged.array.shape}"
                )
            merged.array[mask.array != 0] = self.structure_ids[structure_name(path)]
        return merged

    def __getstate__(self) -> dict[str, Any]:
        """Drop the volume cache when pickled (DataLoader workers start with an empty cache)."""
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state
