"""NIfTI files (``.nii``, ``.nii.gz``) through nibabel."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.volume import VolumeGeometry
from samtune.data.sample import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.name.endswith(NIFTI_SUFFIXES)


def load_nifti(path: Path):
    """The nibabel image of ``path``; a missing or unreadable file raises ``DataError``."""
    # nibabel (about 0.3 s to import) is loaded on first use, not with the volumes package
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return nib.load(str(path))
    except Exception as err:  # ImageFileError, OSError, EOFError, zlib errors ...
        raise DataError(f"{path}: cannot read as NIfTI: {err}") from err


def nifti_geometry(img, path: Path) -> VolumeGeometry:
    """Shape, spacing and affine of a nibabel image; anything but 3D (after squeezing
    trailing axes of length 1) raises ``DataError``."""
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    return VolumeGeometry(shape=shape, spacing=zooms, affine=affine, path=path)
