"""Pair image volumes with label volumes by case name, and check that each pair shares one grid."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samtune.data.datasets.volumes.formats import COMPANION_SUFFIXES, volume_suffix
from samtune.data.datasets.volumes.nifti import NIFTI_SUFFIXES
from samtune.data.datasets.volumes.readers import is_volume_file, read_geometry, unsupported_message
from samtune.data.datasets.volumes.volume import VolumeGeometry
from samtune.data.pairing import (
    check_pair_by,
    compile_pattern,
    pair_by_pattern,
    read_manifest,
)
from samtune.data.sample import DataError

log = logging.getLogger(__name__)

LABEL_NAME_SUFFIXES = ("_seg", "_label", "_labels", "_mask", "-seg", "-label", "-labels", "-mask")
IMAGE_NAME_SUFFIXES = ("_0000", "_image", "-image")
MAX_CHANNELS = 3
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
        channels: the image files mapped to R, G, B (``image`` is the first), or empty for
            one image file.
        structures: one binary mask file per structure (``label`` is the first), or empty
            for one label file; the classes are named after the files.
    """

    case: str
    image: Path
    label: Path
    geometry: VolumeGeometry
    channels: tuple[Path, ...] = ()
    structures: tuple[Path, ...] = ()
    split: str | None = None


@dataclass(frozen=True)
class VolumePairing:
    """How to find the image and label volumes of each case (beyond the case-name rule).

    Attributes:
        pair_by: ``"name"`` (``case_name``) or ``"pattern"`` (``image_pattern`` /
            ``label_pattern``, templates such as ``{id}_ct`` or regexes with ``(?P<id>...)``).
        image_pattern: the image pattern for ``pair_by="pattern"``.
        label_pattern: the label pattern for ``pair_by="pattern"``.
        manifest: a csv / json of ``image, label[, split]`` rows, or MSD's ``dataset.json``.
        image_glob: case folders: the image files of each case folder under ``images``
            (e.g. ``"*.nii.gz"``); every subfolder is one case.
        label_glob: case folders: the label file(s) of each case (e.g. ``"*seg*"``); several
            files are one binary mask per structure, named by file.
        channels: case folders with several image files: the sequence(s) to read, by the last
            word of their names (``[flair, t1c, t2]``: up to three, mapped to R, G, B).
    """

    pair_by: str = "name"
    image_pattern: str | None = None
    label_pattern: str | None = None
    manifest: str | Path | None = None
    image_glob: str | None = None
    label_glob: str | None = None
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_pair_by(self.pair_by)
        if self.pair_by == "pattern":
            compile_pattern(self.image_pattern, "data.image_pattern")
            compile_pattern(self.label_pattern, "data.label_pattern")
        if (self.image_glob is None) != (self.label_glob is None):
            raise ValueError("give data.image_glob and data.label_glob together (case folders)")
        if len(self.channels) > MAX_CHANNELS:
            raise ValueError(
                f"data.channels maps at most {MAX_CHANNELS} sequences to R, G, B, got "
                f"{list(self.channels)}"
            )
        if self.channels and self.image_glob is None:
            raise ValueError("data.channels picks files inside case folders: give data.image_glob")

    @property
    def rule(self) -> str:
        """The rule in words, for the pairing table."""
        if self.manifest is not None:
            return f"the pair manifest {self.manifest}"
        if self.image_glob is not None:
            channels = f", channels {list(self.channels)}" if self.channels else ""
            return f"case folders: image {self.image_glob!r}, label {self.label_glob!r}{channels}"
        if self.pair_by == "pattern":
            return f"pattern {self.image_pattern!r} <-> {self.label_pattern!r}"
        return "case name (label suffixes " + ", ".join(LABEL_NAME_SUFFIXES) + ")"


def channel_name(path: Path) -> str:
    """A sequence's name in a case folder: the last word of the file name (``_flair``)."""
    return re.split(r"[_\-.\s]+", _stem(path))[-1].lower()


def structure_name(path: Path) -> str:
    """A structure's name: its file name without the volume extension."""
    return _stem(path)


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
    pairing: VolumePairing | None = None,
) -> list[VolumePair]:
    """Pair image volumes with label volumes by case name and check that they match.

    Pairs are matched with ``case_name``. When ``images`` and ``labels`` are the same folder,
    files with a label suffix are the labels and the others the images. Only headers are read.

    Args:
        images: a folder of image volumes or a list of them (see ``list_volumes``).
        labels: a folder of label volumes or a list of them.
        pairing: the rule (see :class:`VolumePairing`); None pairs by case name.
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

    pairing = pairing or VolumePairing()
    if pairing.manifest is not None:
        found = _manifest_cases(pairing.manifest, fail)
    elif pairing.image_glob is not None:
        found = _case_folders(images, pairing, fail)
    elif pairing.pair_by == "pattern":
        found = _pattern_cases(images, labels, pairing, fail)
    else:
        found = _name_cases(images, labels, fail)
    pairs = []
    for case in sorted(found):
        image, label, channels, structures, split = found[case]
        try:
            image_geo = read_geometry(image)
            for other in (label, *channels[1:], *structures[1:]):
                check_same_grid(image_geo, read_geometry(other))
        except DataError as err:
            fail(image, str(err))
            continue
        pairs.append(
            VolumePair(
                case=case,
                image=image_geo.path,
                label=label,
                geometry=image_geo,
                channels=channels,
                structures=structures,
                split=split,
            )
        )
    return pairs


Found = dict[str, tuple[Path, Path, tuple[Path, ...], tuple[Path, ...], str | None]]


def _name_cases(images, labels, fail: Callable[[Path, str], None]) -> Found:
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
    return {
        case: (image_cases[case], label_cases[case], (), (), None)
        for case in set(image_cases) & set(label_cases)
    }


def _pattern_cases(images, labels, pairing: VolumePairing, fail) -> Found:
    image_paths = list_volumes(images)
    label_paths = image_paths if _same(images, labels) else list_volumes(labels)
    rows, problems = pair_by_pattern(
        image_paths,
        label_paths,
        image_pattern=pairing.image_pattern,
        mask_pattern=pairing.label_pattern,
        stem=_stem,
        mask_word="label",
    )
    for file, message in problems:
        fail(Path(file), message)
    return {row.id: (row.image, row.mask, (), (), None) for row in rows}


def _manifest_cases(manifest: str | Path, fail) -> Found:
    rows, problems, _ = read_manifest(manifest, stem=_stem)
    for file, message in problems:
        fail(Path(file), message)
    found: Found = {}
    for row in rows:
        case = case_name(row.image, role="image")
        if case in found:
            fail(row.image, f"{manifest}: {found[case][0]} and {row.image} share the case {case!r}")
            continue
        found[case] = (row.image, row.mask, (), (), row.split)
    return found


def _case_folders(images, pairing: VolumePairing, fail) -> Found:
    if not isinstance(images, (str, Path)) or not Path(images).is_dir():
        raise DataError(f"{images}: data.image_glob reads a folder holding one folder per case")
    root = Path(images)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{root}: no case folders (data.image_glob reads one folder per case)")
    found: Found = {}
    for folder in folders:
        label_files = _volume_files(folder, pairing.label_glob)
        image_files = [p for p in _volume_files(folder, pairing.image_glob) if p not in label_files]
        names = ", ".join(p.name for p in sorted(folder.iterdir())[:6])
        if not label_files:
            fail(folder, f"{folder}: no label file matches data.label_glob={pairing.label_glob!r} "
                 f"(files there: {names})")  # fmt: skip
            continue
        if not image_files:
            fail(folder, f"{folder}: no image file matches data.image_glob={pairing.image_glob!r} "
                 f"(files there: {names})")  # fmt: skip
            continue
        channels: tuple[Path, ...] = ()
        if pairing.channels:
            chosen = []
            by_name = {channel_name(p): p for p in image_files}
            for wanted in pairing.channels:
                if str(wanted).lower() not in by_name:
                    fail(folder, f"{folder}: no {wanted!r} sequence among {sorted(by_name)} "
                         f"(data.channels={list(pairing.channels)})")  # fmt: skip
                    break
                chosen.append(by_name[str(wanted).lower()])
            else:
                channels = tuple(chosen)
            if not channels:
                continue
            image = channels[0]
        elif len(image_files) > 1:
            sequences = [channel_name(p) for p in image_files]
            fail(folder, f"{folder}: {len(image_files)} image files match "
                 f"data.image_glob={pairing.image_glob!r} (sequences {', '.join(sequences)}); pick "
                 f"one, or up to three for R, G, B, with data.channels=[{', '.join(sequences[:3])}]")  # fmt: skip
            continue
        else:
            image = image_files[0]
        structures = tuple(label_files) if len(label_files) > 1 else ()
        found[folder.name] = (image, label_files[0], channels, structures, None)
    return found


def _volume_files(folder: Path, pattern: str) -> list[Path]:
    return sorted(
        p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")
        and is_volume_file(p)
    )  # fmt: skip


def _same(a, b) -> bool:
    return (
        isinstance(a, (str, Path))
        and isinstance(b, (str, Path))
        and Path(a).resolve() == Path(b).resolve()
    )


def check_same_grid(image: VolumeGeometry, label: VolumeGeometry) -> None:
    """Raise ``DataError`` unless two volumes have the same shape, spacing and axis directions.

    Spacings match when every axis differs by at most 1e-3 relative; directions when every
    direction cosine differs by at most 1e-3. The origin is not compared. A label that gives no
    length unit (a TIFF stack without calibration, unit ``"pixel"``) is taken on its image's
    grid: its spacing is not compared.
    """
    if image.shape != label.shape:
        raise DataError(
            f"shape mismatch: image {image.path} is {image.shape} but label {label.path} is {label.shape}"
        )
    a, b = np.asarray(image.spacing), np.asarray(label.spacing)
    image_unit, label_unit = image.spacing_unit, label.spacing_unit
    uncalibrated = label_unit == "pixel"
    different = image_unit != label_unit or np.any(
        np.abs(a - b) > SPACING_RTOL * np.maximum(np.abs(a), np.abs(b))
    )
    if different and not uncalibrated:
        raise DataError(
            f"spacing mismatch: image {image.path} has spacing {_fmt(image.spacing)} {image_unit} "
            f"but label {label.path} has {_fmt(label.spacing)} {label_unit}"
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
