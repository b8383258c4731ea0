"""Datamodule for one-mask-file-per-object layouts (see :mod:`samtune.data.datasets.per_object`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samtune.data.datamodules.splits import SplitDataModule
from samtune.data.datasets.per_object import PerObjectDataset


class PerObjectDataModule(SplitDataModule):
    """Train from ``root``; val from ``val_root`` or split off train; test from ``test_root``.

    Args:
        root: the training folder (``<id>/images``, ``<id>/masks`` or ``images/``, ``masks/<stem>/``).
        val_root: a validation folder in the same layout, or None (split off by ``val_fraction``).
        test_root: a test folder in the same layout, or None.
        layout: ``"auto"``, ``"nested"`` or ``"flat"``.
        **kwargs: the :class:`SplitDataModule` arguments (``image_size`` is required).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        val_root: str | Path | None = None,
        test_root: str | Path | None = None,
        layout: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.roots = {"train": root, "val": val_root, "test": test_root}
        self.layout = layout

    def has_split(self, split: str) -> bool:
        """Whether a folder was given for ``split``."""
        return self.roots.get(split) is not None

    def layout_dataset(self, split: str) -> PerObjectDataset:
        """The split's folder as a dataset."""
        return PerObjectDataset(root=self.roots[split], layout=self.layout, on_error=self.on_error)
