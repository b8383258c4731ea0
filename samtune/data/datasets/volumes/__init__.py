"""Medical volumes (NIfTI, DICOM series, NRRD / MetaImage, TIFF stacks) as 2D slice samples.

``volume`` (the ``Volume`` type), ``readers`` (any format; ``nifti``, ``dicom`` and ``formats``
for NRRD / MetaImage / TIFF), ``pairing`` (images with labels by case name), ``intensity``,
``labels``, ``slicing`` and ``dataset`` (``VolumeSliceDataset``).
"""

from samtune.data.datasets.volumes.dataset import VolumeSliceDataset
from samtune.data.datasets.volumes.intensity import (
    WINDOW_PRESETS,
    IntensityMap,
    PercentileNormalization,
    Window,
    resolve_intensity,
    resolve_normalization,
    resolve_window,
    to_uint8,
)
from samtune.data.datasets.volumes.labels import (
    class_names_for,
    objects_from_label_slice,
    validate_classes,
)
from samtune.data.datasets.volumes.pairing import (
    VolumePair,
    case_name,
    check_same_grid,
    list_volumes,
    pair_volumes,
)
from samtune.data.datasets.volumes.readers import read_geometry, read_volume
from samtune.data.datasets.volumes.slicing import (
    select_slices,
    slice_to_sample,
    slice_view,
    slices_with_objects,
)
from samtune.data.datasets.volumes.volume import Volume, VolumeGeometry

__all__ = [
    "WINDOW_PRESETS",
    "IntensityMap",
    "PercentileNormalization",
    "Volume",
    "VolumeGeometry",
    "VolumePair",
    "VolumeSliceDataset",
    "Window",
    "case_name",
    "check_same_grid",
    "class_names_for",
    "list_volumes",
    "objects_from_label_slice",
    "pair_volumes",
    "read_geometry",
    "read_volume",
    "resolve_intensity",
    "resolve_normalization",
    "resolve_window",
    "select_slices",
    "slice_to_sample",
    "slice_view",
    "slices_with_objects",
    "to_uint8",
    "validate_classes",
]
