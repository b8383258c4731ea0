"""Read any 3D volume: a NIfTI file, a DICOM series folder, NRRD / MetaImage (``.nrrd .nhdr
.mha .mhd``, through SimpleITK) or a multi-page TIFF stack, as one ``Volume``.

Images are ``float32`` with the stored scaling applied (NIfTI ``scl_slope/scl_inter``, DICOM
``RescaleSlope/RescaleIntercept``, so CT is in HU). Label volumes keep an integer array: the
file's own integer type, or the smallest unsigned integer type that holds float-stored labels.
See :mod:`samtune.data.datasets.volumes.volume` for the array order and the affine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.dicom import dicom_series
from samtune.data.datasets.volumes.formats import read_header, read_voxels, volume_suffix
from samtune.data.datasets.volumes.nifti import is_nifti, load_nifti, nifti_geometry
from samtune.data.datasets.volumes.volume import Volume, VolumeGeometry, as_label_array
from samtune.data.sample import DataError


def is_volume_file(path: Path) -> bool:
    """Whether ``path`` names a volume file: NIfTI, NRRD, MetaImage or TIFF stack."""
    return is_nifti(path) or volume_suffix(path) is not None


def read_geometry(path: str | Path) -> VolumeGeometry:
    """Read the shape, spacing and affine of a NIfTI file or DICOM series folder, without pixels.

    Raises:
        DataError: the file or folder is missing, unreadable, or not a 3D volume.
    """
    path = Path(path)
    if path.is_dir():
        return dicom_series(path).geometry
    if is_nifti(path):
        img = load_nifti(path)
        return nifti_geometry(img, path)
    if volume_suffix(path):
        shape, spacing, affine, unit = read_header(path)
        return VolumeGeometry(
            shape=shape, spacing=spacing, affine=affine, path=path, spacing_unit=unit
        )
    raise DataError(unsupported_message(path))


def read_volume(path: str | Path, *, label: bool = False) -> Volume:
    """Read a NIfTI file or a DICOM series folder.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, or a folder holding the files of one DICOM series.
        label: read a label volume: an integer array, checked to hold only whole numbers >= 0.

    Returns:
        The volume; see :mod:`samtune.data.datasets.volumes.volume` for the array order and
        the affine.

    Raises:
        DataError: the file is missing, unreadable, not 3D, or (``label``) holds values that
            are not non-negative integers. The message names the file.
    """
    path = Path(path)
    if path.is_dir():
        series = dicom_series(path)
        array = series.read_array()
        geometry = series.geometry
    elif is_nifti(path):
        img = load_nifti(path)
        geometry = nifti_geometry(img, path)
        try:
            raw = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
        except Exception as err:  # nibabel raises many types for truncated or corrupt data
            raise DataError(f"{path}: cannot read the NIfTI voxel data: {err}") from err
        array = np.asarray(raw).reshape(geometry.shape)
    elif volume_suffix(path):
        geometry = read_geometry(path)
        array = read_voxels(path)
    else:
        raise DataError(unsupported_message(path))
    array = as_label_array(array, path) if label else array.astype(np.float32, copy=False)
    return Volume(
        array=array,
        spacing=geometry.spacing,
        affine=geometry.affine,
        path=path,
        spacing_unit=geometry.spacing_unit,
    )


def unsupported_message(path: Path) -> str:
    """Why ``path`` cannot be read as a volume: missing, or not a known volume format."""
    if not path.exists():
        return f"{path}: no such file or folder"
    return (
        f"{path}: expected a volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, a .tif stack) "
        "or a folder holding one DICOM series"
    )
