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
    "SampleDataset": "samtune.data.base",
    "DataSkipWarning": "samtune.data.base",
    "CocoDataset": "samtune.data.coco",
    "FolderDataset": "samtune.data.folder",
    "SyntheticDataset": "samtune.data.synthetic",
    "SamTransform": "samtune.data.transforms",
    "SamDataModule": "samtune.data.datamodule",
    "collate": "samtune.data.datamodule",
    "NUCLEI_MINI": "samtune.data.demo",
    "NucleiMiniDataModule": "samtune.data.demo",
    "CocoDataModule": "samtune.data.coco_datamodule",
    "FolderDataModule": "samtune.data.folder_datamodule",
    "SyntheticDataModule": "samtune.data.synthetic_datamodule",
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
