"""Datamodule for COCO json files, and for Roboflow's COCO export folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samtune.data.datamodules.base import SamDataModule
from samtune.data.datasets.coco import CocoDataset
from samtune.data.sample import DataError

ROBOFLOW_JSON = "_annotations.coco.json"
ROBOFLOW_SPLITS = {"train": ("train",), "val": ("valid", "val"), "test": ("test",)}


def find_export_splits(root: str | Path) -> dict[str, Path]:
    """``{split: json}`` of a COCO export folder (Roboflow's layout): ``train/``, ``valid/`` (or
    ``val/``) and ``test/``, each holding its images and ``_annotations.coco.json``.

    Raises:
        DataError: ``root`` holds none of them.
    """
    root = Path(root)
    found = {}
    for split, folders in ROBOFLOW_SPLITS.items():
        for folder in folders:
            if (root / folder / ROBOFLOW_JSON).is_file():
                found[split] = root / folder / ROBOFLOW_JSON
                break
    if not found:
        raise DataError(
            f"{root}: give data.train_json and data.val_json, or a COCO export folder holding "
            f"train/{ROBOFLOW_JSON} (and valid/, test/ alike, as Roboflow writes them), or "
            "a folder holding its images and one COCO json (a single split)"
        )
    return found


def find_single_json(root: Path) -> Path | None:
    """The one COCO json lying directly in ``root`` beside its images (a dataset shipped as a
    single split), or None when ``root`` holds no json.

    Raises:
        DataError: ``root`` holds several jsons (naming them: say which split each is).
    """
    found = sorted(p for p in root.glob("*.json") if p.is_file() and not p.name.startswith("."))
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:6]) + (" ..." if len(found) > 6 else "")
        raise DataError(
            f"{root}: holds {len(found)} json files ({names}) and no train/ valid/ test/ export "
            "folders: say which is which with data.train_json, data.val_json and data.test_json"
        )
    return found[0] if found else None


class CocoDataModule(SamDataModule):
    """Train/val (and optionally test) splits, each a COCO json over an image folder.

    With no json given at all, ``root`` is a COCO export folder as Roboflow writes it (see
    :func:`find_export_splits`): each split's images sit next to its json. A ``root`` holding
    one json beside its images, and no split folders, is a dataset shipped as a single split:
    it is the ``val`` split (the one ``samtune-eval`` evaluates and ``samtune-check-data``
    checks; no train json is asked for unless training). ``defined_splits`` lists the splits
    that have a json.

    Args:
        root: folder the jsons' ``file_name`` entries are relative to, or the export folder.
        train_json: COCO json of the train split (needed only when that split is used).
        val_json: COCO json of the val split (likewise).
        test_json: COCO json of the test split, or None.
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).

    Raises:
        DataError: no json given and ``root`` is no export folder.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        train_json: str | Path | None = None,
        val_json: str | Path | None = None,
        test_json: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.jsons: dict[str, str | Path | None] = {
            "train": train_json,
            "val": val_json,
            "test": test_json,
        }
        self.roots = {split: self.root for split in self.jsons}
        self.export = all(path is None for path in self.jsons.values())
        self.single_json: Path | None = None
        if self.export:  # an export folder: each json's images sit next to it
            try:
                splits = find_export_splits(self.root)
            except DataError:
                self.single_json = find_single_json(self.root) if self.root.is_dir() else None
                if self.single_json is None:
                    raise
                splits = {"val": self.single_json}
            for split, path in splits.items():
                self.jsons[split], self.roots[split] = path, path.parent
        self.defined_splits = tuple(s for s, path in self.jsons.items() if path is not None)

    def make_dataset(self, split: str) -> CocoDataset:
        """The COCO dataset of ``split``."""
        ann_file = self.jsons.get(split)
        if ann_file is None and self.single_json is not None:
            raise ValueError(
                f"{type(self).__name__}: {self.root} ships a single split, {self.single_json.name} "
                f"(read as the val split); the {split!r} split needs its own json: set "
                f"data.{split}_json=<file>"
            )
        if ann_file is None:
            where = (
                f"the export {self.root} has no {'/'.join(ROBOFLOW_SPLITS.get(split, (split,)))} "
                f"folder with {ROBOFLOW_JSON}"
                if self.export
                else f"set data.{split}_json=<file>"
            )
            raise ValueError(
                f"{type(self).__name__}: the {split!r} split needs a COCO json: {where}"
            )
        return CocoDataset(root=self.roots[split], ann_file=ann_file, on_error=self.on_error)
