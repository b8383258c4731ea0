"""Datamodule for image folders with multi-class semantic masks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from samtune.data.datamodules.folder import FolderDataModule
from samtune.data.datasets.semantic import SemanticFolderDataset, parse_class_table


class SemanticDataModule(FolderDataModule):
    """Image and semantic-mask folders (see :class:`SemanticFolderDataset`), split like
    :class:`FolderDataModule`.

    Args:
        classes: ``{mask value: name}`` or ``{name: [r, g, b]}``.
        **kwargs: the :class:`FolderDataModule` arguments (``mask_type`` is ``semantic``).
    """

    def __init__(self, *, classes: Mapping[Any, Any], **kwargs: Any) -> None:
        kwargs.pop("mask_type", None)
        super().__init__(mask_type="auto", **kwargs)
        if isinstance(classes, DictConfig):
            classes = OmegaConf.to_container(classes)
        parse_class_table(classes)  # fail early
        self.classes = dict(classes)

    def _folder(
        self, images: str | Path | None, masks: str | Path | None, rows: list | None = None
    ) -> SemanticFolderDataset:
        return SemanticFolderDataset(
            images=images,
            masks=masks,
            rows=rows,
            **self.pairing_options,
            classes=self.classes,
            mask_suffix=self.mask_suffix,
            connectivity=self.connectivity,
            on_error=self.on_error,
            void_value=self.void_value,
        )
