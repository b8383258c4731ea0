"""The ``Volume`` type every reader returns, and the geometry read from headers alone.

Array order and coordinates (the same for every format):

* ``Volume.array`` is indexed ``[i, j, k]`` in NIfTI voxel order. For a DICOM series ``i`` is
  the column index within a slice, ``j`` the row index, and ``k`` the slice index, with slices
  sorted along the slice normal (so ``array[:, :, k]`` is ``pixel_array.T`` of the ``k``-th
  slice in space).
* ``Volume.affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres, as nibabel's ``img.affine``
  does. DICOM patient coordinates (LPS) are converted to RAS, so a NIfTI label written for a
  DICOM series by a converter that keeps voxel order (``i`` = column, ``j`` = row) has the
  same affine as the series.
* ``Volume.spacing`` is the voxel size along ``i, j, k`` in mm; only a file that gives no
  length unit (a TIFF stack without calibration) has it in its own unit, named by
  ``spacing_unit`` (``"pixel"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.sample import DataError

# DICOM and ITK store directions and origins in LPS; a volume's affine is RAS+.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a volume's voxels are, read from the header alone (no pixel data).

    Attributes:
        shape: number of voxels along ``i, j, k``.
        spacing: voxel size along ``i, j, k`` in ``spacing_unit``.
        affine: ``4 x 4`` map from voxel index ``(i, j, k, 1)`` to RAS+ mm.
        path: the NIfTI file or the DICOM series folder.
        spacing_unit: ``"mm"``, or the file's own unit where it gives no length (``"pixel"``).
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path
    spacing_unit: str = "mm"

    @property
    def direction(self) -> np.ndarray:
        """``3 x 3`` direction cosines: the affine's columns divided by their lengths."""
        linear = np.asarray(self.affine, dtype=np.float64)[:3, :3]
        norms = np.linalg.norm(linear, axis=0)
        return linear / np.where(norms > 0, norms, 1.0)


@dataclass
class Volume:
    """A 3D image or label volume.

    Attributes:
        array: ``float32`` for images, an integer type for labels; indexed ``[i, j, k]``
            (NIfTI voxel order, see the module docstring).
        spacing: voxel size along ``i, j, k`` in ``spacing_unit``.
        affine: ``4 x 4`` map from voxel index to RAS+ mm.
        path: the NIfTI file or the DICOM series folder it was read from.
        spacing_unit: ``"mm"``, or the file's own unit where it gives no length (``"pixel"``).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path
    spacing_unit: str = "mm"

    @property
    def geometry(self) -> VolumeGeometry:
        """The volume's shape, spacing and affine as a ``VolumeGeometry``."""
        shape = tuple(int(n) for n in self.array.shape)
        return VolumeGeometry(
            shape=shape,
            spacing=self.spacing,
            affine=self.affine,
            path=self.path,
            spacing_unit=self.spacing_unit,
        )


def as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
    """Check that ``array`` holds non-negative whole numbers; return it as an integer array."""
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.size and array.min() < 0:
            raise DataError(f"{path}: label values must be >= 0, found {array.min()}")
        return array
    if not np.all(np.isfinite(array)):
        raise DataError(f"{path}: label volume holds NaN or infinite values")
    rounded = np.rint(array)
    if not np.array_equal(rounded, array):
        bad = array[rounded != array].flat[0]
        raise DataError(f"{path}: label values must be whole numbers, found {bad}")
    low, high = (float(rounded.min()), float(rounded.max())) if rounded.size else (0.0, 0.0)
    if low < 0:
        raise DataError(f"{path}: label values must be >= 0, found {low:g}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return rounded.astype(dtype)
    return rounded.astype(np.int64)
