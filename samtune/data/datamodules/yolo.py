"""Datamodule for YOLO segmentation exports: ``data.yaml`` names the splits and classes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from samtune.data.datamodules.splits import SplitDataModule
from samtune.data.datasets.yolo import YoloDataset
from samtune.data.sample import DataError

YAML_NAMES = ("data.yaml", "dataset.yaml")


def find_data_yaml(root: str | Path) -> Path:
    """``root`` itself if it is a yaml file, else its ``data.yaml`` (or ``dataset.yaml``).

    Raises:
        DataError: no such file.
    """
    root = Path(root)
    if root.is_file():
        return root
    for name in YAML_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(
        f"{root}: no {' or '.join(YAML_NAMES)} found (a YOLO export has one at its root)"
    )


def read_data_yaml(path: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """``({split: image folders or files}, class names)`` of an Ultralytics/Roboflow ``data.yaml``.

    Split entries are folders, or ``.txt`` files listing one image per line (as Ultralytics
    writes for COCO), relative to the yaml's ``path`` (itself relative to the yaml's folder) or
    to the yaml's folder; Roboflow's ``../train/images`` entries are also looked up as
    ``train/images`` next to the yaml. ``val`` may be called ``valid``.

    Raises:
        DataError: naming the file, for unreadable yaml, missing ``names``/``train``, a split
            folder or list that is not found (listing where it was looked for), or a listed
            image that does not exist (naming the list and its line).
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read data.yaml: {err}") from err
    if not isinstance(data, dict) or "names" not in data or "train" not in data:
        raise DataError(f"{path}: expected a YOLO data.yaml with 'train' and 'names' entries")
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
    here = path.parent
    base = here / str(data["path"]) if data.get("path") else here
    splits: dict[str, list[Path]] = {}
    for split, keys in (("train", ("train",)), ("val", ("val", "valid")), ("test", ("test",))):
        entry = next((data[k] for k in keys if data.get(k)), None)
        if entry is None:
            continue
        folders = []
        for value in entry if isinstance(entry, list) else [entry]:
            tried = [base / str(value), here / str(value)]
            if str(value).startswith("../"):
                tried.append(here / str(value)[3:])
            listing = str(value).lower().endswith(".txt")
            found = next((p for p in tried if (p.is_file() if listing else p.is_dir())), None)
            if found is None:
                what = "image list" if listing else "images folder"
                raise DataError(
                    f"{path}: the {split} {what} {value!r} was not found (looked in "
                    f"{', '.join(str(p) for p in dict.fromkeys(tried))})"
                )
            folders.extend(read_image_list(found) if listing else [found])
        splits[split] = folders
    return splits, names


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

    Args:
        root: the export's folder (holding ``data.yaml``) or the yaml file itself.
        **kwargs: the :class:`SplitDataModule` arguments (``image_size`` is required).
    """

    def __init__(self, *, root: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.yaml_file = find_data_yaml(root)
        self.splits, self.names = read_data_yaml(self.yaml_file)

    def has_split(self, split: str) -> bool:
        """Whether ``data.yaml`` names ``split``."""
        return split in self.splits

    def layout_dataset(self, split: str) -> YoloDataset:
        """The images of ``split`` with their labels."""
        return YoloDataset(images=self.splits[split], names=self.names, on_error=self.on_error)
