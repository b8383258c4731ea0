"""DICOM series: one folder of slice files, ordered in space, read as one volume.

``array[:, :, k]`` is ``pixel_array.T`` of the ``k``-th slice along the slice normal;
``RescaleSlope/RescaleIntercept`` are applied (CT in HU); the affine is converted from the
patient's LPS to RAS+.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.volume import LPS_TO_RAS, VolumeGeometry
from samtune.data.sample import DataError

log = logging.getLogger(__name__)

_SPACING_STEP_RTOL = 1e-2


@dataclass
class DicomSeries:
    """The files of one series in spatial order, and the geometry they define."""

    files: list[Path]
    geometry: VolumeGeometry

    def read_array(self) -> np.ndarray:
        """The voxels, ``float32`` with the rescale applied, indexed ``[i, j, k]``."""
        import pydicom  # loaded on first use, as nibabel in nifti.load_nifti

        ni, nj, nk = self.geometry.shape
        out = np.empty((ni, nj, nk), dtype=np.float32)
        for k, file in enumerate(self.files):
            try:
                ds = pydicom.dcmread(file)
                pixels = ds.pixel_array
            except Exception as err:  # compressed data without a decoder, truncated files ...
                raise DataError(f"{file}: cannot read the DICOM pixel data: {err}") from err
            if pixels.shape != (nj, ni):
                raise DataError(
                    f"{file}: pixel data is {pixels.shape} (rows, columns), expected {(nj, ni)} "
                    f"like the rest of the series in {self.geometry.path}"
                )
            slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
            intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
            out[:, :, k] = (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T
        return out


def _dicom_headers(folder: Path) -> list[tuple[Path, object]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers = []
    skipped = []
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if file.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except InvalidDicomError:
            skipped.append(file.name)
            continue
        except Exception as err:
            raise DataError(f"{file}: cannot read the DICOM header: {err}") from err
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append(file.name)
            continue
        headers.append((file, ds))
    if skipped:
        log.warning(
            "%s: ignored %d files that are not DICOM images: %s", folder, len(skipped), skipped[:5]
        )
    if not headers:
        raise DataError(f"{folder}: no DICOM image files in this folder (expected one series)")
    return headers


def dicom_series(folder: Path) -> DicomSeries:
    """The files of the one series in ``folder`` in spatial order, and their geometry.

    Raises:
        DataError: no DICOM images, several series, multi-frame files, slices of different
            sizes or orientations, repeated or unevenly spaced slice positions.
    """
    headers = _dicom_headers(folder)
    series_uids = {str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in headers}
    if len(series_uids) > 1:
        raise DataError(
            f"{folder}: holds {len(series_uids)} DICOM series (SeriesInstanceUID), expected one "
            "series per folder"
        )
    if int(getattr(headers[0][1], "NumberOfFrames", 1) or 1) > 1:
        raise DataError(f"{folder}: multi-frame DICOM is not supported; convert it to NIfTI")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
    if len(sizes) > 1:
        raise DataError(f"{folder}: slices differ in size (rows, columns): {sorted(sizes)}")
    rows, cols = sizes.pop()
    first = headers[0][1]
    if "PixelSpacing" in first:
        row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    else:
        log.warning("%s: no PixelSpacing; assuming 1 mm pixels", folder)
        row_spacing = col_spacing = 1.0

    has_position = all(
        "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers
    )
    if has_position:
        files, row_cos, col_cos, normal, origin, step = _order_by_position(folder, headers)
    else:
        files, row_cos, col_cos, normal, origin, step = _order_by_instance_number(folder, headers)

    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = normal * step
    lps[:3, 3] = origin
    geometry = VolumeGeometry(
        shape=(cols, rows, len(files)),
        spacing=(col_spacing, row_spacing, step),
        affine=LPS_TO_RAS @ lps,
        path=folder,
    )
    return DicomSeries(files=files, geometry=geometry)


def _orientation(folder: Path, headers: list[tuple[Path, object]]):
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in headers])
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise DataError(f"{folder}: slices have different ImageOrientationPatient; expected one")
    row_cos, col_cos = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row_cos, col_cos)
    return row_cos, col_cos, normal


def _order_by_position(folder: Path, headers: list[tuple[Path, object]]):
    row_cos, col_cos, normal = _orientation(folder, headers)
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    files = [headers[i][0] for i in order]
    if len(files) == 1:
        step = _fallback_slice_step(folder, headers[0][1])
    else:
        steps = np.diff(along)
        if steps.min() <= 1e-6:
            k = int(np.argmin(steps))
            raise DataError(
                f"{folder}: {files[k].name} and {files[k + 1].name} are at the same slice position "
                f"({along[k]:.4g} mm along the slice normal); expected one file per slice"
            )
        step = float(np.median(steps))
        if np.abs(steps - step).max() > _SPACING_STEP_RTOL * step:
            raise DataError(
                f"{folder}: slice spacing varies from {steps.min():.4g} to {steps.max():.4g} mm "
                "(a missing slice?); expected evenly spaced slices"
            )
    return files, row_cos, col_cos, normal, positions[order[0]], step


def _order_by_instance_number(folder: Path, headers: list[tuple[Path, object]]):
    missing = [file.name for file, ds in headers if "InstanceNumber" not in ds]
    if missing:
        raise DataError(
            f"{folder}: cannot order the slices: {missing[:3]} have neither "
            "ImagePositionPatient/ImageOrientationPatient nor InstanceNumber"
        )
    numbers = [int(ds.InstanceNumber) for _, ds in headers]
    if len(set(numbers)) != len(numbers):
        raise DataError(f"{folder}: repeated InstanceNumber values; expected one file per slice")
    order = np.argsort(numbers, kind="stable")
    files = [headers[i][0] for i in order]
    first = headers[int(order[0])][1]
    log.warning("%s: no ImagePositionPatient; slices ordered by InstanceNumber", folder)
    if all("ImageOrientationPatient" in ds for _, ds in headers):
        row_cos, col_cos, normal = _orientation(folder, headers)
    else:
        row_cos, col_cos, normal = np.eye(3)
    origin = np.array([float(v) for v in getattr(first, "ImagePositionPatient", (0, 0, 0))])
    return files, row_cos, col_cos, normal, origin, _fallback_slice_step(folder, first)


def _fallback_slice_step(folder: Path, ds) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = getattr(ds, keyword, None)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    log.warning("%s: slice spacing unknown; assuming 1 mm", folder)
    return 1.0
