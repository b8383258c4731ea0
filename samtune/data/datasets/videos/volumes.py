"""Volumes as clips: the slices of a CT/MR/microscopy volume along ``axis`` as a video.

Every volume format ``data=volumes`` reads (NIfTI, DICOM series, NRRD, MetaImage, TIFF stacks),
paired, checked, windowed and cached exactly as :class:`VolumeSliceDataset` does: this reader
holds one and takes its uint8 image volumes and label volumes from it. Slice ``t`` of the clip is
``slice_view(volume, axis, t)`` (rows and columns in array order, so a prediction put back with
``slice_view`` lands on the same voxels).

Objects and their ids (stable across every clip of a volume):

- ``mode="instance"``: each connected 3D region of a label value is one object, ids numbered
  from 1 by label value, then region in raster order; ``connectivity=8`` joins voxels touching
  at an edge or corner (26-connected), ``4`` only through faces (6-connected). The class id is
  the label value.
- ``mode="semantic"``: each label value is one object whose id is the value.

``classes`` keeps only the listed values; on each slice an object with fewer than ``min_area``
pixels counts as absent there (as ``data=volumes`` drops it from that slice). ``meta`` holds
``file``, ``label_file``, ``volume`` (case), ``axis``, ``spacing`` (frame axis, row, column, in
``spacing_unit`` mm), ``volume_spacing`` (``i, j, k``), ``affine`` and ``class_names``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from samtune.data.datasets.videos.base import ClipDataset
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.datasets.videos.source import VideoSource
from samtune.data.datasets.volumes import VolumeSliceDataset, class_names_for, slice_view
from samtune.data.datasets.volumes.dataset import PathList
from samtune.data.datasets.volumes.pairing import VolumePair, VolumePairing


class VolumeClipDataset(ClipDataset):
    """Paired image and label volumes, one clip item per volume (see the module docstring).

    Args:
        images: folder (or list) of image volumes, as for ``VolumeSliceDataset``.
        labels: folder (or list) of label volumes.
        axis: the array axis the clip runs along (0, 1 or 2).
        window: CT window preset or ``{"level", "width"}``.
        normalize: percentile normalisation (when ``window`` is None).
        mode: ``"instance"`` (3D regions) or ``"semantic"`` (label values).
        classes: ``{label value: name}``; other values are ignored.
        min_area: smallest object per slice, in pixels.
        connectivity: 8 (26-connected in 3D) or 4 (6-connected).
        cache_volumes: volumes kept in memory.
        pairing: how images find their labels (see ``VolumeSliceDataset``).
        pairs: the pairs themselves, already paired.
        **kwargs: the :class:`ClipDataset` arguments.
    """

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
        min_area: int = 1,
        connectivity: int = 8,
        cache_volumes: int = 2,
        sampling: ClipSampling | None = None,
        seed: int = 0,
        repeats: int = 1,
        on_error: str = "raise",
        pairing: VolumePairing | None = None,
        pairs: list[VolumePair] | None = None,
    ) -> None:
        super().__init__(sampling=sampling, seed=seed, repeats=repeats, on_error=on_error)
        self.slices = VolumeSliceDataset(
            images=images,
            labels=labels,
            pairing=pairing,
            pairs=pairs,
            axis=axis,
            window=window,
            normalize=normalize,
            mode=mode,
            classes=classes,
            empty_slice_rate=1.0,
            min_area=min_area,
            seed=seed,
            connectivity=connectivity,
            cache_volumes=cache_volumes,
            on_error=on_error,
        )
        self.skipped = self.slices.skipped
        self.axis = self.slices.axis
        self.classes = self.slices.classes
        self._objects: OrderedDict[str, tuple[np.ndarray, dict[int, int]]] = OrderedDict()
        for pair in self.slices.pairs:
            self.add_source(VolumeSource(self, pair.case))

    def objects(self, case: str) -> tuple[np.ndarray, dict[int, int]]:
        """``(object map, {object id: class id})`` of one volume (computed once, cached with
        the volume)."""
        if case in self._objects:
            self._objects.move_to_end(case)
            return self._objects[case]
        entry = object_map(
            self.slices.label_volume(case),
            axis=self.axis,
            mode=self.slices.mode,
            classes=self.classes,
            min_area=self.slices.min_area,
            connectivity=self.slices.connectivity,
        )
        self._objects[case] = entry
        while len(self._objects) > self.slices.cache_volumes:
            self._objects.popitem(last=False)
        return entry

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without cached object maps (DataLoader workers start empty)."""
        state = self.__dict__.copy()
        state["_objects"] = OrderedDict()
        return state


class VolumeSource(VideoSource):
    """One volume of a :class:`VolumeClipDataset`, its slices along the dataset's axis."""

    def __init__(self, dataset: VolumeClipDataset, case: str) -> None:
        super().__init__()
        self.dataset = dataset
        self.case = case
        pair = next(p for p in dataset.slices.pairs if p.case == case)
        self.pair = pair
        self.name = case
        self.file = str(pair.image)
        self.num_frames = int(pair.geometry.shape[dataset.axis])
        self.annotated = np.ones(self.num_frames, dtype=bool)

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """Slices of the windowed uint8 volume, grey repeated to RGB."""
        volume = self.dataset.slices.image_volume(self.case)
        grey = np.stack([slice_view(volume, axis=self.dataset.axis, index=int(t)) for t in indices])
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=3))

    def read_labels(self, indices: Sequence[int]) -> np.ndarray:
        """Slices of the object map."""
        objects, _ = self.dataset.objects(self.case)
        return np.stack(
            [slice_view(objects, axis=self.dataset.axis, index=int(t)) for t in indices]
        ).astype(np.int64)

    def object_areas(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, N x T areas)`` from the object map in memory."""
        objects, classes = self.dataset.objects(self.case)
        ids = np.array(sorted(classes), dtype=np.int64)
        moved = np.moveaxis(objects, self.dataset.axis, 0).reshape(self.num_frames, -1)
        areas = np.zeros((len(ids), self.num_frames), dtype=np.int64)
        for t in range(self.num_frames):
            counts = np.bincount(moved[t], minlength=int(ids.max(initial=0)) + 1)
            areas[:, t] = counts[ids]
        return ids, areas

    def objects_on(self, t: int) -> np.ndarray:
        """Objects on slice ``t`` (from the object map in memory)."""
        ids = np.unique(self.read_labels([t])[0])
        return ids[ids != 0].astype(np.int64)

    def class_ids_of(self, object_ids: np.ndarray) -> np.ndarray:
        """The label value of each object."""
        _, classes = self.dataset.objects(self.case)
        return np.array([classes[int(i)] for i in object_ids], dtype=np.int64)

    def meta(self) -> dict[str, Any]:
        """Where the slices come from and their spacing (see the module docstring)."""
        axis = self.dataset.axis
        spacing = tuple(float(s) for s in self.pair.geometry.spacing)
        others = [a for a in range(3) if a != axis]
        _, classes = self.dataset.objects(self.case)
        return {
            "file": str(self.pair.image),
            "label_file": str(self.pair.label),
            "video": self.case,
            "volume": self.case,
            "axis": axis,
            "spacing": (spacing[axis], spacing[others[0]], spacing[others[1]]),
            "spacing_unit": "mm",
            "volume_spacing": spacing,
            "volume_shape": tuple(int(n) for n in self.pair.geometry.shape),
            "affine": np.asarray(self.pair.geometry.affine).tolist(),
            "class_names": class_names_for(
                self.dataset.classes, np.array(sorted(set(classes.values())), dtype=np.int64)
            ),
        }


def object_map(
    label: np.ndarray,
    *,
    axis: int,
    mode: str,
    classes: Mapping[int, str] | None,
    min_area: int = 1,
    connectivity: int = 8,
) -> tuple[np.ndarray, dict[int, int]]:
    """Number a label volume's objects (see the module docstring).

    Returns:
        ``(object map, {object id: class id})``: the map is int32, 0 background, the shape of
        ``label``.
    """
    values = [int(v) for v in np.unique(label) if v != 0 and (classes is None or int(v) in classes)]
    out = np.zeros(label.shape, dtype=np.int32)
    class_of: dict[int, int] = {}
    structure = np.ones((3, 3, 3), bool) if connectivity == 8 else None  # None: 6-connected
    next_id = 1
    for value in values:
        region = label == value
        if mode == "semantic":
            out[region] = value
            class_of[value] = value
            continue
        components, count = ndimage.label(region, structure=structure)
        keep = components > 0
        out[keep] = components[keep] + (next_id - 1)
        for k in range(count):
            class_of[next_id + k] = value
        next_id += count
    if min_area > 1:
        moved = np.moveaxis(out, axis, 0)  # a view: edits land in ``out``
        for t in range(moved.shape[0]):
            counts = np.bincount(moved[t].ravel())
            small = np.flatnonzero((counts > 0) & (counts < min_area))
            small = small[small != 0]
            if small.size:
                moved[t][np.isin(moved[t], small)] = 0
        present = set(np.unique(out).tolist())
        class_of = {i: c for i, c in class_of.items() if i in present}
    return out, class_of
