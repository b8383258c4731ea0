"""Read 3D medical volumes: NIfTI files, DICOM series, NRRD / MetaImage (``.nrrd .nhdr .mha
.mhd``, through SimpleITK) and multi-page TIFF stacks, as one ``Volume`` type.

Array order and coordinates (the same for both formats):

* ``Volume.array`` is indexed ``[i, j, k]`` in NIfTI voxel order. For a DICOM series ``i`` is
  the column index within a slice, ``j`` the row index, and ``k`` the slice index, with slices
  sorted along the slice normal (so ``array[:, :, k]`` is ``pixel_array.T`` of the ``k``-th
  slice in space).
* ``Volume.affine`` maps ``(i, j, k, 1)`` to RAS+ millimetres, as nibabel's ``img.affine``
  does. DICOM patient coordinates (LPS) are converted to RAS, so a NIfTI label written for a
  DICOM series by a converter that keeps voxel order (``i`` = column, ``j`` = row) has the
  same affine as the series.
* ``Volume.spacing`` is the voxel size along ``i, j, k`` in mm.

Images are ``float32`` with the stored scaling applied (NIfTI ``scl_slope/scl_inter``, DICOM
``RescaleSlope/RescaleIntercept``, so CT is in HU). Label volumes keep an integer array: the
file's own integer type, or the smallest unsigned integer type that holds float-stored labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.formats import (
    COMPANION_SUFFIXES,
    read_header,
    read_voxels,
    volume_suffix,
)
from samtune.data.sample import DataError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACING_STEP_RTOL = 1e-2


@dataclass(frozen=True)
class VolumeGeometry:
    """Where a volume's voxels are, read from the header alone (no pixel data).

    Attributes:
        shape: number of voxels along ``i, j, k``.
        spacing: voxel size along ``i, j, k`` in mm.
        affine: ``4 x 4`` map from voxel index ``(i, j, k, 1)`` to RAS+ mm.
        path: the NIfTI file or the DICOM series folder.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path

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
        spacing: voxel size along ``i, j, k`` in mm.
        affine: ``4 x 4`` map from voxel index to RAS+ mm.
        path: the NIfTI file or the DICOM series folder it was read from.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path

    @property
    def geometry(self) -> VolumeGeometry:
        """The volume's shape, spacing and affine as a ``VolumeGeometry``."""
        shape = tuple(int(n) for n in self.array.shape)
        return VolumeGeometry(shape=shape, spacing=self.spacing, affine=self.affine, path=self.path)


def is_nifti(path: Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``)."""
    return path.name.endswith(NIFTI_SUFFIXES)


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
        return _dicom_series(path).geometry
    if is_nifti(path):
        img = _load_nifti(path)
        return _nifti_geometry(img, path)
    if volume_suffix(path):
        shape, spacing, affine = read_header(path)
        return VolumeGeometry(shape=shape, spacing=spacing, affine=affine, path=path)
    raise DataError(_unsupported_message(path))


def read_volume(path: str | Path, *, label: bool = False) -> Volume:
    """Read a NIfTI file or a DICOM series folder.

    Args:
        path: a ``.nii`` / ``.nii.gz`` file, or a folder holding the files of one DICOM series.
        label: read a label volume: an integer array, checked to hold only whole numbers >= 0.

    Returns:
        The volume; see the module docstring for the array order and the affine.

    Raises:
        DataError: the file is missing, unreadable, not 3D, or (``label``) holds values that
            are not non-negative integers. The message names the file.
    """
    path = Path(path)
    if path.is_dir():
        series = _dicom_series(path)
        array = series.read_array()
        geometry = series.geometry
    elif is_nifti(path):
        img = _load_nifti(path)
        geometry = _nifti_geometry(img, path)
        try:
            raw = np.asanyarray(img.dataobj) if label else img.get_fdata(dtype=np.float32)
        except Exception as err:  # nibabel raises many types for truncated or corrupt data
            raise DataError(f"{path}: cannot read the NIfTI voxel data: {err}") from err
        array = np.asarray(raw).reshape(geometry.shape)
    elif volume_suffix(path):
        geometry = read_geometry(path)
        array = read_voxels(path)
    else:
        raise DataError(_unsupported_message(path))
    array = _as_label_array(array, path) if label else array.astype(np.float32, copy=False)
    return Volume(array=array, spacing=geometry.spacing, affine=geometry.affine, path=path)


def _unsupported_message(path: Path) -> str:
    if not path.exists():
        return f"{path}: no such file or folder"
    return (
        f"{path}: expected a volume file (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, a .tif stack) "
        "or a folder holding one DICOM series"
    )


def _as_label_array(array: np.ndarray, path: Path) -> np.ndarray:
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


# NIfTI -------------------------------------------------------------------------------------


def _load_nifti(path: Path):
    import nibabel as nib

    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return nib.load(str(path))
    except Exception as err:  # ImageFileError, OSError, EOFError, zlib errors ...
        raise DataError(f"{path}: cannot read as NIfTI: {err}") from err


def _nifti_geometry(img, path: Path) -> VolumeGeometry:
    shape = tuple(int(n) for n in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {tuple(img.shape)}")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    return VolumeGeometry(shape=shape, spacing=zooms, affine=affine, path=path)


# DICOM -------------------------------------------------------------------------------------


@dataclass
class _DicomSeries:
    """The files of one series in spatial order, and the geometry they define."""

    files: list[Path]
    geometry: VolumeGeometry

    def read_array(self) -> np.ndarray:
        import pydicom

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


def _dicom_series(folder: Path) -> _DicomSeries:
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
        affine=_LPS_TO_RAS @ lps,
        path=folder,
    )
    return _DicomSeries(files=files, geometry=geometry)


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


# Pairing image and label volumes -----------------------------------------------------------

LABEL_NAME_SUFFIXES = ("_seg", "_label", "_labels", "_mask")
IMAGE_NAME_SUFFIXES = ("_0000",)
SPACING_RTOL = 1e-3
DIRECTION_ATOL = 1e-3


@dataclass(frozen=True)
class VolumePair:
    """An image volume, its label volume, and the image's geometry (checked to match the label).

    Attributes:
        case: the case name both files share (see ``case_name``).
        image: the image's NIfTI file or DICOM series folder.
        label: the label's NIfTI file or DICOM series folder.
        geometry: the image's shape, spacing and affine.
    """

    case: str
    image: Path
    label: Path
    geometry: VolumeGeometry


def case_name(path: str | Path, *, role: str) -> str:
    """The case name of a volume, used to pair images with labels.

    The rule: take the file name without ``.nii.gz`` / ``.nii`` (or a DICOM series folder's
    name), then remove one trailing role suffix: ``_seg``, ``_label``, ``_labels`` or ``_mask``
    for labels, ``_0000`` (nnU-Net channel 0) for images. So ``case01.nii.gz``,
    ``case01_0000.nii.gz`` and a folder ``case01/`` pair with labels ``case01.nii.gz``,
    ``case01_seg.nii.gz`` or ``case01_label.nii.gz``. Suffixes are matched case-sensitively.

    Args:
        path: the file or folder.
        role: ``"image"`` or ``"label"``.
    """
    if role not in ("image", "label"):
        raise ValueError(f"role must be 'image' or 'label', got {role!r}")
    name = _stem(Path(path))
    for suffix in LABEL_NAME_SUFFIXES if role == "label" else IMAGE_NAME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def _stem(path: Path) -> str:
    """The name without its volume extension."""
    for ext in NIFTI_SUFFIXES:
        if path.name.endswith(ext):
            return path.name[: -len(ext)]
    if volume_suffix(path):
        return path.stem
    return path.name


def _has_label_suffix(path: Path) -> bool:
    return case_name(path, role="label") != _stem(path)


def list_volumes(source: str | Path | list[str | Path] | tuple[str | Path, ...]) -> list[Path]:
    """The volumes named by ``source``.

    Args:
        source: a folder whose volume files (``.nii .nii.gz .nrrd .nhdr .mha .mhd .tif .tiff``)
            and subfolders (one DICOM series each) are the volumes; or a list of such files and
            series folders. Hidden entries are skipped, and so are the ``.raw`` data files of
            ``.mhd`` / ``.nhdr`` headers; other files in a folder are skipped with a logged
            warning.

    Raises:
        DataError: a listed path does not exist, or a folder holds no volumes.
    """
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DataError(
                f"{folder}: expected a folder of volumes (NIfTI files or DICOM series folders)"
            )
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        volumes = [p for p in entries if p.is_dir() or is_volume_file(p)]
        ignored = [
            p.name
            for p in entries
            if p not in volumes and not p.name.lower().endswith(COMPANION_SUFFIXES)
        ]
        if ignored:
            log.warning(
                "%s: ignored %d entries that are not volumes: %s", folder, len(ignored), ignored[:5]
            )
        if not volumes:
            raise DataError(
                f"{folder}: no volumes found (expected .nii/.nii.gz/.nrrd/.mha/.mhd/.tif files "
                "or DICOM series folders)"
            )
        return volumes
    volumes = [Path(p) for p in source]
    for p in volumes:
        if not (p.is_dir() or (p.is_file() and is_volume_file(p))):
            raise DataError(_unsupported_message(p))
    return volumes


def _by_case(paths: list[Path], role: str, fail: Callable[[Path, str], None]) -> dict[str, Path]:
    cases: dict[str, Path] = {}
    repeated: set[str] = set()
    for p in paths:
        case = case_name(p, role=role)
        if case in cases:
            repeated.add(case)
            fail(
                p,
                f"{cases[case]} and {p} both have the case name {case!r}; expected one {role} per case",
            )
            continue
        cases[case] = p
    return {case: p for case, p in cases.items() if case not in repeated}


def pair_volumes(
    images: str | Path | list[str | Path] | tuple[str | Path, ...],
    labels: str | Path | list[str | Path] | tuple[str | Path, ...],
    *,
    problems: list[tuple[str, str]] | None = None,
) -> list[VolumePair]:
    """Pair image volumes with label volumes by case name and check that they match.

    Pairs are matched with ``case_name``. When ``images`` and ``labels`` are the same folder,
    files with a label suffix are the labels and the others the images. Only headers are read.

    Args:
        images: a folder of image volumes or a list of them (see ``list_volumes``).
        labels: a folder of label volumes or a list of them.
        problems: None (the default) raises at the first bad case. A list instead collects
            ``(file, message)`` for every bad case, which is left out, and pairing goes on.
            A missing folder, or one without volumes, always raises.

    Returns:
        One ``VolumePair`` per (good) case, sorted by case name.

    Raises:
        DataError: a volume without a partner, two volumes with one case name, an unreadable
            header, or a pair whose shapes differ, whose spacings differ by more than 1e-3
            (relative), or whose axis directions differ by more than 1e-3. The message names
            both files and both values.
    """

    def fail(file: Path, message: str) -> None:
        if problems is None:
            raise DataError(message)
        problems.append((str(file), message))

    same_folder = (
        isinstance(images, (str, Path))
        and isinstance(labels, (str, Path))
        and Path(images).resolve() == Path(labels).resolve()
    )
    if same_folder:
        everything = list_volumes(images)
        label_paths = [p for p in everything if _has_label_suffix(p)]
        image_paths = [p for p in everything if p not in label_paths]
    else:
        image_paths, label_paths = list_volumes(images), list_volumes(labels)
    image_cases = _by_case(image_paths, "image", fail)
    label_cases = _by_case(label_paths, "label", fail)
    for case, path in image_cases.items():
        if case not in label_cases:
            fail(
                path,
                f"image volume {path} has no label partner: no label named {case!r} "
                f"({_expected_names(case, LABEL_NAME_SUFFIXES)}) among {_where(labels)}",
            )
    for case, path in label_cases.items():
        if case not in image_cases:
            fail(
                path,
                f"label volume {path} has no image partner: no image named {case!r} "
                f"({_expected_names(case, IMAGE_NAME_SUFFIXES)}) among {_where(images)}",
            )
    pairs = []
    for case in sorted(set(image_cases) & set(label_cases)):
        try:
            image_geo = read_geometry(image_cases[case])
            label_geo = read_geometry(label_cases[case])
            check_same_grid(image_geo, label_geo)
        except DataError as err:
            fail(image_cases[case], str(err))
            continue
        pairs.append(
            VolumePair(case=case, image=image_geo.path, label=label_geo.path, geometry=image_geo)
        )
    return pairs


def check_same_grid(image: VolumeGeometry, label: VolumeGeometry) -> None:
    """Raise ``DataError`` unless two volumes have the same shape, spacing and axis directions.

    Spacings match when every axis differs by at most 1e-3 relative; directions when every
    direction cosine differs by at most 1e-3. The origin is not compared.
    """
    if image.shape != label.shape:
        raise DataError(
            f"shape mismatch: image {image.path} is {image.shape} but label {label.path} is {label.shape}"
        )
    a, b = np.asarray(image.spacing), np.asarray(label.spacing)
    if np.any(np.abs(a - b) > SPACING_RTOL * np.maximum(np.abs(a), np.abs(b))):
        raise DataError(
            f"spacing mismatch: image {image.path} has spacing {_fmt(image.spacing)} mm but label "
            f"{label.path} has {_fmt(label.spacing)} mm"
        )
    if np.abs(image.direction - label.direction).max() > DIRECTION_ATOL:
        raise DataError(
            f"orientation mismatch: image {image.path} has axes {_axcodes(image)} "
            f"(directions {_fmt(image.direction.ravel())}) but label {label.path} has "
            f"{_axcodes(label)} (directions {_fmt(label.direction.ravel())})"
        )


def _axcodes(geometry: VolumeGeometry) -> str:
    import nibabel as nib

    return "".join(str(c) for c in nib.aff2axcodes(geometry.affine))


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _expected_names(case: str, suffixes: tuple[str, ...]) -> str:
    names = [case] + [case + s for s in suffixes]
    return (
        "looked for "
        + ", ".join(f"{n}.nii.gz" for n in names)
        + f" (or .nii/.nrrd/.mha/.mhd/.tif) or a series folder {case}/"
    )


def _where(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"the {len(source)} listed volumes"
