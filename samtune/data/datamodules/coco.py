"""Datamodule for COCO json files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samtune.data.datamodules.base import SamDataModule
from samtune.data.datasets.coco import CocoDataset


class CocoDataModule(SamDataModule):
    """Train/val (and optionally test) splits, each a COCO json over one image folder.

    Args:
        root: folder the jsons' ``file_name`` entries are relative to.
        train_json: COCO json of the train split (needed only when that split is used).
        val_json: COCO json of the val split (likewise).
        test_json: COCO json of the test split, or None.
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
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
        self.jsons = {"train": train_json, "val": val_json, "test": test_json}

    def make_dataset(self, split: str) -> CocoDataset:
        """The COCO dataset of ``split``."""
        ann_file = self.jsons.get(split)
        if ann_file is None:
            raise ValueError(
                f"{type(self).__name__}: the {split!r} split needs a COCO json: "
                f"set data.{split}_json=<file>"
            )
        return CocoDataset(root=self.root, ann_file=ann_file, on_error=self.on_error)
