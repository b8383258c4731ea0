"""Reading a video or a volume for prediction, and writing its masks back as the input ships.

Input: a folder of frame images (a video, in name order) or any volume ``data=volumes`` reads
(NIfTI, a DICOM series folder, NRRD, MetaImage, TIFF stack), windowed or normalised to uint8
and cut into slices along ``axis`` exactly as the volume datasets do.

Output: for a video one palette PNG per frame, ``<frame stem>.png``, whose index is the object
id (0 background), as VOS annotations are stored; for a volume one label volume
``<case>_seg.<ext>`` on the input's grid: NIfTI keeps the input's affine and header, NRRD and
MetaImage (``.nhdr`` written as ``.nrrd``, ``.mhd`` as ``.mha``) its spacing, origin and
direction, a TIFF stack its voxel size; a DICOM series gets a NIfTI label with the series'
affine (DICOM segmentation objects are not written).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from samtune.data.datasets.videos.frame_folders import list_files
from samtune.data.datasets.volumes import Volume, read_volume, resolve_intensity, slice_view
from samtune.data.datasets.volumes.formats import ITK_SUFFIXES, TIFF_STACK_SUFFIXES
from samtune.data.datasets.volumes.nifti import NIFTI_SUFFIXES, is_nifti, load_nifti
from samtune.data.datasets.volumes.pairing import case_name
from samtune.data.datasets.volumes.slicing import check_axis
from samtune.data.io import IMAGE_SUFFIXES, read_image
from samtune.data.sample import DataError
from samtune.io_atomic import atomic_write


@dataclass
class ClipInput:
    """A video or a volume read for prediction.

    Attributes:
        path: the frames folder or the volume.
        frames: ``T x H x W x 3`` uint8.
        names: the frame file names, or ``slice <k>`` for a volume.
        volume: the volume read (its geometry is written back), or None for a video.
        axis: the slicing axis of a volume.
    """

    path: Path
    frames: np.ndarray
    names: list[str]
    volume: Volume | None = None
    axis: int = 2


def read_clip_input(
    path: str | os.PathLike,
    *,
    axis: int = 2,
    window: str | Mapping[str, Any] | None = None,
    normalize: str | Mapping[str, Any] | None = None,
) -> ClipInput:
    """Read a frames folder or a volume (see the module docstring).

    Raises:
        DataError: a missing or unreadable input, frames of different sizes (naming the file).
    """
    path = Path(path)
    frame_files = list_files(path, IMAGE_SUFFIXES) if path.is_dir() else []
    if frame_files:
        frames = [read_image(f) for f in frame_files]
        for frame, file in zip(frames, frame_files):
            if frame.shape != frames[0].shape:
                raise DataError(
                    f"{file}: frame is {frame.shape[:2]} (HxW) but {frame_files[0].name} is "
                    f"{frames[0].shape[:2]}"
                )
        return ClipInput(path, np.stack(frames), [f.name for f in frame_files])
    axis = check_axis(axis)
    volume = read_volume(path)
    grey = resolve_intensity(window=window, normalize=normalize)(volume.array)
    slices = np.stack([slice_view(grey, axis=axis, index=k) for k in range(grey.shape[axis])])
    frames = np.ascontiguousarray(np.repeat(slices[..., None], 3, axis=3))
    return ClipInput(path, frames, [f"slice {k}" for k in range(len(slices))], volume, axis)


def vos_palette() -> list[int]:
    """The palette of DAVIS and YouTube-VOS annotations (PASCAL VOC's), 768 values."""
    palette = []
    for index in range(256):
        r = g = b = 0
        code = index
        for bit in range(8):
            r |= ((code >> 0) & 1) << (7 - bit)
            g |= ((code >> 1) & 1) << (7 - bit)
            b |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [r, g, b]
    return palette


def write_palette_png(path: Path, labels: np.ndarray) -> Path:
    """``labels`` (``H x W``, values 0-255) as an 8-bit palette PNG, atomically."""
    image = Image.fromarray(np.asarray(labels, dtype=np.uint8))  # mode L; putpalette makes it P
    image.putpalette(vos_palette())
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def write_clip_labels(
    out_dir: str | os.PathLike, clip: ClipInput, labels: np.ndarray
) -> list[Path]:
    """Write the predicted object-id maps (``T x H x W``) of ``clip`` (see the module docstring).

    Returns:
        The files written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if clip.volume is None:
        return [
            write_palette_png(out_dir / f"{Path(name).stem}.png", labels[t])
            for t, name in enumerate(clip.names)
        ]
    volume = np.zeros(clip.volume.array.shape, dtype=np.uint8)
    for t in range(labels.shape[0]):
        slice_view(volume, axis=clip.axis, index=t)[...] = labels[t]
    return [write_label_volume(out_dir, clip.volume, volume)]


def write_label_volume(out_dir: Path, source: Volume, labels: np.ndarray) -> Path:
    """``labels`` (indexed ``[i, j, k]`` like ``source.array``) on ``source``'s grid, in its
    format where it can be written (see the module docstring)."""
    path = Path(source.path)
    case = case_name(path, role="image")
    if is_nifti(path):
        suffix = next(s for s in NIFTI_SUFFIXES if path.name.endswith(s))
        return _write_nifti(out_dir / f"{case}_seg{suffix}", labels, load_nifti(path))
    suffix = path.suffix.lower()
    if suffix in ITK_SUFFIXES:
        suffix = {".nhdr": ".nrrd", ".mhd": ".mha"}.get(suffix, suffix)
        return _write_itk(out_dir / f"{case}_seg{suffix}", labels, path)
    if suffix in TIFF_STACK_SUFFIXES:
        unit = source.spacing_unit
        return _write_tiff(out_dir / f"{case}_seg{suffix}", labels, source.spacing, unit)
    return _write_nifti(out_dir / f"{case}_seg.nii.gz", labels, None, affine=source.affine)


def _write_nifti(
    path: Path, labels: np.ndarray, like: Any, affine: np.ndarray | None = None
) -> Path:
    import nibabel as nib

    if like is not None:
        header = like.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1, 0)
        image = nib.Nifti1Image(labels, like.affine, header=header)
        if like.ndim > 3:
            image = nib.Nifti1Image(labels.reshape(like.shape), like.affine, header=header)
    else:
        image = nib.Nifti1Image(labels, affine)
    data = image.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _write_itk(path: Path, labels: np.ndarray, like: Path) -> Path:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(like))
    reader.ReadImageInformation()
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))  # [k, j, i]
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return _atomic_named(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True))


def _write_tiff(
    path: Path, labels: np.ndarray, spacing: tuple[float, float, float], unit: str = "mm"
) -> Path:
    """An ImageJ stack whose voxel size is ``spacing`` in ``unit`` (written as ImageJ's unit
    when it is mm, so the stack reads back in mm)."""
    import tifffile

    stack = np.ascontiguousarray(labels.transpose(2, 1, 0))  # [k, j, i]: slices of rows
    x, y, z = (float(s) for s in spacing)
    metadata = {"spacing": z, **({"unit": "mm"} if unit == "mm" else {})}

    def write(tmp: Path) -> None:
        tifffile.imwrite(tmp, stack, imagej=True, resolution=(1 / x, 1 / y), metadata=metadata)

    return atomic_write(path, write)


def _atomic_named(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` into a file of ``path``'s own name in a private folder beside it (for writers
    that pick the format from the extension), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as folder:
        tmp = Path(folder) / path.name
        write(tmp)
        os.replace(tmp, path)
    return path
