"""A tiny CT-like case (two labelled ellipsoids) and a DICOM series writer for the volume tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers import NIFTI_SPACING

SHAPE = (32, 32, 12)
SPACING = NIFTI_SPACING
ORIGIN_LPS = (-12.0, 30.0, 100.0)


def make_case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer HU noise with two ellipsoids (class 1 at HU 60, class 2 at HU 300), and labels."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-120, 40, size=SHAPE).astype(np.float32)
    hu[:, :, 0] = -1000  # air, far below any window
    ii, jj, kk = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    label = np.zeros(SHAPE, dtype=np.uint8)
    ball1 = ((ii - 10) / 5) ** 2 + ((jj - 12) / 4) ** 2 + ((kk - 5) / 2.5) ** 2 <= 1
    ball2 = ((ii - 22) / 4) ** 2 + ((jj - 20) / 5) ** 2 + ((kk - 7) / 2) ** 2 <= 1
    label[ball1], hu[ball1] = 1, 60
    label[ball2], hu[ball2] = 2, 300
    return hu, label


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    row_cos=(1.0, 0.0, 0.0),
    col_cos=(0.0, 1.0, 0.0),
    slope: float = 1.0,
    intercept: float = -1024.0,
    with_position: bool = True,
    seed: int = 0,
) -> Path:
    """One CT slice per file, files named in shuffled order; stored = (HU - intercept) / slope."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    ni, nj, nk = hu.shape
    normal = np.cross(row_cos, col_cos)
    series, study = generate_uid(), generate_uid()
    for n, k in enumerate(np.random.default_rng(seed).permutation(nk)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.Rows, ds.Columns = nj, ni
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # (between rows, between columns)
        ds.SliceThickness = SPACING[2]
        ds.InstanceNumber = int(k) + 1
        if with_position:
            ds.ImageOrientationPatient = [*row_cos, *col_cos]
            ds.ImagePositionPatient = [
                float(v) for v in np.add(ORIGIN_LPS, normal * SPACING[2] * k)
            ]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.rint((hu[:, :, k] - intercept) / slope).T  # rows = j, columns = i
        ds.PixelData = stored.astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{n:04d}.dcm", enforce_file_format=True)
    return folder


def dicom_affine_ras(row_cos, col_cos) -> np.ndarray:
    """Hand-built reference: LPS columns = direction x spacing, then flip x and y to RAS."""
    lps = np.eye(4)
    lps[:3, 0] = np.multiply(row_cos, SPACING[0])
    lps[:3, 1] = np.multiply(col_cos, SPACING[1])
    lps[:3, 2] = np.cross(row_cos, col_cos) * SPACING[2]
    lps[:3, 3] = ORIGIN_LPS
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
