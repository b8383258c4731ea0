"""Pair image volumes with label volumes by case name, and check that each pair shares one grid."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.formats import COMPANION_SUFFIXES, volume_suffix
from samtune.data.datasets.volumes.nifti import NIFTI_SUFFIXES
from samtune.data.datasets.volumes.readers import is_volume_file, read_geometry, unsupported_message
from samtune.data.datasets.volumes.volume import VolumeGeometry
from samtune.data.sample import DataError

log = logging.getLogger(__name__)

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
            raise DataError(unsupported_message(p))
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
    import nibabel as nib  # loaded on first use, as in nifti.load_nifti

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
