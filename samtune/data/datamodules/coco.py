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
            f"train/{ROBOFLOW_JSON} (and valid/, test/ alike, as Roboflow writes them)"
        )
    return found


class CocoDataModule(SamDataModule):
    """Train/val (and optionally test) splits, each a COCO json over an image folder.

    With no json given at all, ``root`` is a COCO export folder as Roboflow writes it (see
    :func:`find_export_splits`): each split's images sit next to its json.

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
        if self.export:  # an export folder: each json's images sit next to it
            for split, path in find_export_splits(self.root).items():
                self.jsons[split], self.roots[split] = path, path.parent

    def make_dataset(self, split: str) -> CocoDataset:
        """The COCO dataset of ``split``."""
        ann_file = self.jsons.get(split)
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
