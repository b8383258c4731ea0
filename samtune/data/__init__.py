"""samtune's data: datasets of ``Sample``, the model-input transform, and Lightning datamodules.

Names are imported on first use, so ``import samtune.data.sample`` stays light (no Lightning).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Sample": "samtune.data.sample",
    "DataError": "samtune.data.sample",
    "read_image": "samtune.data.io",
    "read_label_map": "samtune.data.io",
    "SampleDataset": "samtune.data.datasets.base",
    "DataSkipWarning": "samtune.data.datasets.base",
    "CocoDataset": "samtune.data.datasets.coco",
    "FolderDataset": "samtune.data.datasets.folder",
    "SyntheticDataset": "samtune.data.datasets.synthetic",
    "SamTransform": "samtune.data.transforms",
    "SamDataModule": "samtune.data.datamodules.base",
    "collate": "samtune.data.datamodules.base",
    "NUCLEI_MINI": "samtune.data.datasets.demo",
    "NucleiMiniDataModule": "samtune.data.datasets.demo",
    "CocoDataModule": "samtune.data.datamodules.coco",
    "FolderDataModule": "samtune.data.datamodules.folder",
    "SyntheticDataModule": "samtune.data.datamodules.synthetic",
    "VolumeDataModule": "samtune.data.datamodules.volumes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'samtune.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
