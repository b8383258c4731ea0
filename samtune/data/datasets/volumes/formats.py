"""More volume files: NRRD and MetaImage through SimpleITK, and multi-page TIFF stacks.

Both give the same ``(array, spacing, affine)`` as the NIfTI reader: ``array[i, j, k]`` with
``i`` the column, ``j`` the row and ``k`` the slice; ``affine`` maps ``(i, j, k, 1)`` to RAS+
millimetres. ITK stores directions and origin in LPS; they are turned into RAS here. A TIFF
stack has no orientation: its axes are taken as the identity, its voxel size from the ImageJ
``spacing`` (slices) and the resolution tags (pixels), 1 where they are missing, in the file's
own unit (ImageJ's ``unit``, else the ``ResolutionUnit`` tag), converted to mm where that unit
is a length (:data:`UNIT_MM`); a stack whose unit is none (or one that is no length) keeps its
values, labelled ``"pixel"`` (or that unit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.volume import LPS_TO_RAS
from samtune.data.sample import DataError

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
TIFF_STACK_SUFFIXES = (".tif", ".tiff")
COMPANION_SUFFIXES = (".raw", ".zraw", ".gz.raw")  # the data files of .mhd / .nhdr headers
# millimetres per unit, by the names ImageJ and TIFF writers use (lower case)
UNIT_MM = {
    "nm": 1e-6, "nanometer": 1e-6, "nanometre": 1e-6,
    "um": 1e-3, "µm": 1e-3, "μm": 1e-3, "\\u00b5m": 1e-3, "micron": 1e-3, "microns": 1e-3,
    "micrometer": 1e-3, "micrometre": 1e-3, "mm": 1.0, "millimeter": 1.0, "millimetre": 1.0,
    "cm": 10.0, "centimeter": 10.0, "centimetre": 10.0, "m": 1000.0, "meter": 1000.0,
    "metre": 1000.0, "inch": 25.4, "inches": 25.4, "in": 25.4,
}  # fmt: skip
# the TIFF ResolutionUnit tag (2, 3; tifffile also writes 4 and 5) as a unit name
RESOLUTION_UNITS = {2: "inch", 3: "cm", 4: "mm", 5: "um"}
NO_UNIT = "pixel"


def volume_suffix(path: Path) -> str | None:
    """The suffix of ``path`` if it is an ITK or TIFF volume file, else None."""
    suffix = path.suffix.lower()
    return suffix if suffix in ITK_SUFFIXES + TIFF_STACK_SUFFIXES else None


def read_header(
    path: Path,
) -> tuple[tuple[int, int, int], tuple[float, float, float], np.ndarray, str]:
    """``(shape, spacing, affine, spacing unit)`` of an ITK or TIFF volume, without the voxels.

    The unit is ``"mm"`` for ITK files and for TIFF stacks whose unit is a known length; else
    the stack's own unit (``"pixel"`` when it has none), its spacing then left as stored.

    Raises:
        DataError: the file is missing, unreadable or not a single-channel 3D volume.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() in TIFF_STACK_SUFFIXES:
        return _tiff_header(path)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(f"{path}: cannot read with SimpleITK: {_first_line(err)}") from err
    size = tuple(int(n) for n in reader.GetSize())
    if len(size) != 3 or reader.GetNumberOfComponents() != 1:
        raise DataError(
            f"{path}: expected a single-channel 3D volume, got size {size} with "
            f"{reader.GetNumberOfComponents()} components"
        )
    spacing = tuple(float(s) for s in reader.GetSpacing())
    direction = np.asarray(reader.GetDirection(), dtype=np.float64).reshape(3, 3)
    return size, spacing, _affine(spacing, direction, reader.GetOrigin()), "mm"


def read_voxels(path: Path) -> np.ndarray:
    """The voxels of an ITK or TIFF volume, indexed ``[i, j, k]`` (column, row, slice).

    Raises:
        DataError: the file is unreadable.
    """
    if path.suffix.lower() in TIFF_STACK_SUFFIXES:
        return _tiff_stack(path)[0].transpose(2, 1, 0)
    import SimpleITK as sitk

    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))  # [k, j, i]
    except RuntimeError as err:
        raise DataError(f"{path}: cannot read with SimpleITK: {_first_line(err)}") from err
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def _affine(spacing, direction: np.ndarray, origin) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)[None, :]
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return LPS_TO_RAS @ lps


def _tiff_stack(path: Path) -> tuple[np.ndarray, tuple[float, float, float], str]:
    """``(array [k, j, i], spacing (i, j, k), unit)`` of a single-channel TIFF stack."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(page.shape) for page in tif.pages]
            differing = next((n for n, shape in enumerate(shapes) if shape != shapes[0]), None)
            if differing is not None:
                raise DataError(
                    f"{path}: the pages of this TIFF stack differ in size: page 0 is "
                    f"{_page_size(shapes[0])}, page {differing} is {_page_size(shapes[differing])} "
                    f"({len(shapes)} pages); every slice of a stack must have the same size"
                )
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
            spacing, unit = tiff_spacing(tif)
    except DataError:
        raise
    except Exception as err:  # tifffile raises many types for corrupt files
        raise DataError(f"{path}: cannot read TIFF stack: {err}") from err
    keep = [i for i, ax in enumerate(axes) if ax in "YX" or array.shape[i] > 1]
    axes = "".join(axes[i] for i in keep)
    array = array.reshape([array.shape[i] for i in keep])
    if array.ndim == 2:
        raise DataError(
            f"{path}: a single 2-D image, not a stack of slices (use data=folder for 2-D images)"
        )
    if array.ndim != 3 or axes[-2:] != "YX":
        raise DataError(
            f"{path}: expected a single-channel stack of slices (axes ZYX), got axes {axes!r} "
            f"and shape {array.shape}"
        )
    return array, spacing, unit


def _page_size(shape: tuple[int, ...]) -> str:
    """A TIFF page's shape as ``H x W`` (``x C`` for several samples per pixel)."""
    return " x ".join(str(v) for v in shape)


def _tiff_header(
    path: Path,
) -> tuple[tuple[int, int, int], tuple[float, float, float], np.ndarray, str]:
    array, spacing, unit = _tiff_stack(path)
    nk, nj, ni = array.shape
    return (ni, nj, nk), spacing, np.diag([*spacing, 1.0]), unit


def tiff_spacing(tif) -> tuple[tuple[float, float, float], str]:
    """``((x, y, z) voxel size, unit)`` of an open ``tifffile.TiffFile``.

    x and y from the resolution tags (pixels per unit), z from ImageJ's ``spacing``, 1 where
    missing. The unit is ImageJ's ``unit`` if the file has ImageJ metadata, else the
    ``ResolutionUnit`` tag. A length unit (:data:`UNIT_MM`) is converted to mm and labelled
    ``"mm"``; otherwise the values are as stored, labelled with the file's unit (``"pixel"``
    when it names none).
    """

    def per_pixel(tag_name: str) -> float:
        tag = tif.pages[0].tags.get(tag_name)
        if tag is None:
            return 1.0
        numerator, denominator = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
        return float(denominator) / float(numerator) if numerator else 1.0

    meta = tif.imagej_metadata
    if meta is not None:
        z = float(meta.get("spacing", 1.0) or 1.0)
        unit = str(meta.get("unit") or "").strip()
    else:
        z = 1.0
        tag = tif.pages[0].tags.get("ResolutionUnit")
        unit = RESOLUTION_UNITS.get(int(tag.value), "") if tag is not None else ""
        if tif.pages[0].tags.get("XResolution") is None:
            unit = ""  # the TIFF default (inch) without a resolution says nothing
    spacing = (per_pixel("XResolution"), per_pixel("YResolution"), z)
    factor = UNIT_MM.get(unit.lower())
    if factor is None:
        return spacing, unit or NO_UNIT
    return tuple(v * factor for v in spacing), "mm"


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("sitk::ERROR", "Exception thrown"))]
    return (useful or lines or [type(err).__name__])[-1]
