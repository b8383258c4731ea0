"""The bundled demo data (nuclei-mini) and its datamodule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from samtune.data.datamodules.base import SamDataModule
from samtune.data.datasets.coco import CocoDataset

NUCLEI_MINI = Path(__file__).resolve().parents[1] / "demo" / "nuclei-mini"
"""Root of the bundled nuclei-mini data: ``images/``, ``masks/``, ``annotations/{train,val}.json``."""


class NucleiMiniDataModule(SamDataModule):
    """The bundled 2018 Data Science Bowl subset: 24 train / 8 val images, read as COCO.

    Args:
        **kwargs: the :class:`SamDataModule` arguments (``image_size`` is required).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root = NUCLEI_MINI

    def make_dataset(self, split: str) -> CocoDataset:
        """The ``"train"`` or ``"val"`` split (there is no test split)."""
        if split not in ("train", "val"):
            raise ValueError(f"nuclei-mini has the splits 'train' and 'val', not {split!r}")
        return CocoDataset(
            root=self.root / "images",
            ann_file=self.root / "annotations" / f"{split}.json",
            on_error=self.on_error,
        )
