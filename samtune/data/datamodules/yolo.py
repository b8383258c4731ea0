"""Datamodule for YOLO segmentation exports: ``data.yaml`` names the splits and classes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from samtune.data.datamodules.splits import SplitDataModule
from samtune.data.datasets.yolo import YoloDataset
from samtune.data.sample import DataError

YAML_NAMES = ("data.yaml", "dataset.yaml")
YAML_SUFFIXES = (".yaml", ".yml")
SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}


def find_data_yaml(root: str | Path) -> Path:
    """``root`` itself if it is a yaml file, else its ``data.yaml`` (or ``dataset.yaml``), else
    the one yaml file it holds under another name (Roboflow and others name it after the
    project: ``cells.v3i.yolov8.yaml``).

    Raises:
        DataError: ``root`` does not exist, holds no yaml file, or holds several and none is
            called ``data.yaml`` (naming them: give one as ``data.root=<file.yaml>``).
    """
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"{root}: no such folder or yaml file (data.root)")
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    found = sorted(
        p
        for p in root.iterdir()
        if p.is_file() and p.suffix.lower() in YAML_SUFFIXES and not p.name.startswith(".")
    )
    if len(found) == 1:
        return found[0]
    if found:
        raise DataError(
            f"{root}: holds several yaml files ({', '.join(p.name for p in found)}) and no "
            f"{' or '.join(YAML_NAMES)}: name the export's one as data.root=<file.yaml>"
        )
    raise DataError(
        f"{root}: no {' or '.join(YAML_NAMES)} (nor any other .yaml) found; a YOLO export has "
        "one at its root, or give it as data.root=<file.yaml>"
    )


def split_candidates(value: str, yaml_file: Path, path_key: object) -> list[Path]:
    """Where a split entry of a data.yaml may be, in the order tried.

    Relative to the yaml's ``path`` (a relative ``path`` is taken from the yaml's folder), then
    to the yaml's folder itself, so a ``path`` naming a folder of the exporter's machine that
    does not exist here does no harm. An entry starting with ``../`` (Roboflow writes
    ``../train/images`` for a yaml beside ``train/``) is also tried without it, as Ultralytics
    does.
    """
    here = yaml_file.parent
    bases = []
    if path_key not in (None, "") and str(path_key).strip():
        bases.append(here / str(path_key).strip())
    bases.append(here)
    tried: list[Path] = []
    for base in bases:
        tried.append(base / value)
        if value.startswith("../"):
            tried.append(base / value[3:])
    return list(dict.fromkeys(Path(os.path.normpath(p)) for p in tried))


def read_data_yaml(
    path: Path,
) -> tuple[dict[str, list[Path]], list[str], dict[str, str]]:
    """``({split: image folders or files}, class names, {split: why it cannot be read})`` of an
    Ultralytics/Roboflow ``data.yaml``.

    Split entries are folders, or ``.txt`` files listing one image per line (as Ultralytics
    writes for COCO), looked up as :func:`split_candidates` says. ``val`` may be called
    ``valid``. A split the yaml names but whose folder or list is missing is not an error here:
    it is returned in the third dict (its message names the yaml, the entry and every path
    tried), so the splits that are there still serve a command that needs only them.

    Raises:
        DataError: naming the file, for unreadable yaml, missing ``names``, no split at all,
            or ``names`` that is neither a list nor a numbered mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read the YOLO yaml: {err}") from err
    named = [k for keys in SPLIT_KEYS.values() for k in keys]
    if not isinstance(data, dict) or "names" not in data or not any(data.get(k) for k in named):
        raise DataError(
            f"{path}: expected a YOLO data.yaml with 'names' and at least one of 'train', "
            "'val' (or 'valid'), 'test'"
        )
    names = data["names"]
    if isinstance(names, dict):
        keys = sorted(int(k) for k in names)
        if keys != list(range(len(keys))):
            raise DataError(f"{path}: names must be numbered 0..n-1, got {keys}")
        names = [str(names[k]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{path}: 'names' must be a list or a {{index: name}} mapping")
    splits: dict[str, list[Path]] = {}
    missing: dict[str, str] = {}
    for split, keys in SPLIT_KEYS.items():
        key = next((k for k in keys if data.get(k)), None)
        if key is None:
            continue
        entry = data[key]
        try:
            splits[split] = _split_files(path, split, key, entry, data.get("path"))
        except DataError as err:
            missing[split] = str(err)
    return splits, names, missing


def _split_files(path: Path, split: str, key: str, entry: Any, path_key: object) -> list[Path]:
    files: list[Path] = []
    for value in entry if isinstance(entry, list) else [entry]:
        value = str(value)
        tried = split_candidates(value, path, path_key)
        listing = value.lower().endswith(".txt")
        found = next((p for p in tried if (p.is_file() if listing else p.is_dir())), None)
        if found is None:
            what = "image list" if listing else "images folder"
            raise DataError(
                f"{path}: the {split} {what} {value!r} ({key}:) was not found; looked in "
                f"{', '.join(str(p) for p in tried)}"
            )
        files.extend(read_image_list(found) if listing else [found])
    return files


def read_image_list(path: Path) -> list[Path]:
    """The images a split's ``.txt`` list names, one per line (blank lines and ``#`` skipped).

    Relative lines (``./images/train/a.jpg`` or ``images/train/a.jpg``) are taken from the
    list's folder, as Ultralytics does for its COCO lists.

    Raises:
        DataError: an unreadable or empty list, or a line whose image does not exist (naming
            the list, the line number and the path looked at).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the image list: {err}") from err
    images = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        image = Path(entry) if Path(entry).is_absolute() else path.parent / entry
        if not image.is_file():
            raise DataError(
                f"{path}:{number}: listed image {entry!r} not found (looked at {image})"
            )
        images.append(image)
    if not images:
        raise DataError(f"{path}: the image list names no image")
    return images


class YoloDataModule(SplitDataModule):
    """The splits of a YOLO segmentation export; val split off train when ``data.yaml`` has none.

    A split the yaml names but that is not on disk stops only the commands that read it (its
    error names every path tried); the others read the splits that are there.

    Args:
        root: the export's folder (holding ``data.yaml``, or one yaml under another name) or
            the yaml file itself.
        **kwargs: the :class:`SplitDataModule` arguments (``image_size`` is required).
    """

    def __init__(self, *, root: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.yaml_file = find_data_yaml(root)
        self.splits, self.names, self.missing = read_data_yaml(self.yaml_file)

    def has_split(self, split: str) -> bool:
        """Whether the yaml names ``split`` (found on disk or not)."""
        return split in self.splits or split in self.missing

    def layout_dataset(self, split: str) -> YoloDataset:
        """The images of ``split`` with their labels.

        Raises:
            DataError: the split's folder or list is missing (naming the paths tried), or the
                yaml names no such split.
        """
        if split in self.missing:
            raise DataError(self.missing[split])
        if split not in self.splits:
            raise DataError(
                f"{self.yaml_file}: names no {split} split (it names "
                f"{', '.join(sorted(self.splits)) or 'none that exists'})"
            )
        return YoloDataset(images=self.splits[split], names=self.names, on_error=self.on_error)
