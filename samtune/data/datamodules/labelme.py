"""Datamodule for LabelMe folders (see :mod:`samtune.data.datasets.labelme`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from samtune.data.datamodules.splits import SplitDataModule
from samtune.data.datasets.labelme import LabelMeDataset, list_jsons, polygon_labels


class LabelMeDataModule(SplitDataModule):
    """Train from ``root``; val from ``val_root`` or split off train; test from ``test_root``.

    Args:
        root: folder of LabelMe jsons for training.
        val_root: a validation folder, or None (split off by ``val_fraction``).
        test_root: a test folder, or None.
        classes: the polygon labels to use, in class-id order; None: every label found in the
            given folders, sorted (so all splits share one class table).
        **kwargs: the :class:`SplitDataModule` arguments (``image_size`` is required).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        val_root: str | Path | None = None,
        test_root: str | Path | None = None,
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.roots = {"train": root, "val": val_root, "test": test_root}
        if classes is None:
            files = [f for r in self.roots.values() if r is not None for f in list_jsons(r)]
            classes = polygon_labels(files)
        if not classes:
            raise ValueError(f"{root}: no labelled polygons found in the LabelMe files")
        self.classes = [str(c) for c in classes]

    def has_split(self, split: str) -> bool:
        """Whether a folder was given for ``split``."""
        return self.roots.get(split) is not None

    def layout_dataset(self, split: str) -> LabelMeDataset:
        """The split's folder as a dataset."""
        return LabelMeDataset(root=self.roots[split], classes=self.classes, on_error=self.on_error)
