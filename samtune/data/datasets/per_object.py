"""One mask file per object: the Data Science Bowl layout and its flat variant.

``nested``: ``<root>/<id>/images/<image>`` and ``<root>/<id>/masks/*.png`` (the 2018 Data
Science Bowl release and many Kaggle sets). ``flat``: ``<root>/images/<stem>.<ext>`` and
``<root>/masks/<stem>/*.png``. Every nonzero pixel of a mask file belongs to its object (0/1
and 0/255 alike); a mask file with no pixel is dropped as an empty mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samtune.data.datasets.objects import Item, ObjectFilesDataset, no_objects
from samtune.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_label_map
from samtune.data.sample import DataError

LAYOUTS = ("auto", "nested", "flat")


def _visible(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and p.suffix.lower() in suffixes
        and (p.is_file() or p.is_symlink())
    )


def detect_layout(root: Path) -> str:
    """``"flat"`` when ``root`` holds ``images/`` and ``masks/`` with a folder per image,
    ``"nested"`` when its subfolders hold ``images/``.

    Raises:
        DataError: ``root`` is no folder or has neither layout (naming what was expected).
    """
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    masks = root / "masks"
    if (root / "images").is_dir() and masks.is_dir() and any(p.is_dir() for p in masks.iterdir()):
        return "flat"
    if any((p / "images").is_dir() for p in root.iterdir() if p.is_dir()):
        return "nested"
    raise DataError(
        f"{root}: no per-object mask layout found: expected <id>/images/<image> with "
        "<id>/masks/*.png in subfolders (nested), or images/<stem>.png with masks/<stem>/*.png "
        "(flat)"
    )


class PerObjectDataset(ObjectFilesDataset):
    """Images with one binary mask file per object (see the module docstring for the layouts).

    ``class_ids`` are all 1; ``meta`` adds ``mask_files`` (all mask files of the image).
    An image folder with several images, a missing or empty masks folder, an unreadable mask
    or a mask whose size differs from its image's are bad data, named in the error.

    Args:
        root: the dataset folder.
        layout: ``"auto"`` (detected), ``"nested"`` or ``"flat"``.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        layout: str = "auto",
        on_error: str = "raise",
        min_area: int = 1,
    ) -> None:
        super().__init__(class_names={1: "object"}, on_error=on_error, min_area=min_area)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.root = Path(root)
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        items = self._nested_items() if self.layout == "nested" else self._flat_items()
        if not items and not self.skipped:
            raise DataError(f"{self.root}: no images found in the {self.layout} layout")
        self.index(items)

    def _nested_items(self) -> list[Item]:
        items = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            images_dir = folder / "images"
            if not images_dir.is_dir():
                self.reject(str(folder), f"{folder}: no images/ folder (expected <id>/images/)")
                continue
            images = _visible(images_dir, IMAGE_SUFFIXES)
            if len(images) != 1:
                self.reject(
                    str(images_dir),
                    f"{images_dir}: expected one image, found {len(images)}"
                    + (f" ({', '.join(p.name for p in images[:4])})" if images else ""),
                )
                continue
            items.append(Item(image=images[0], image_id=folder.name, source=folder / "masks"))
        return items

    def _flat_items(self) -> list[Item]:
        images_dir, masks_root = self.root / "images", self.root / "masks"
        items = []
        for image in _visible(images_dir, IMAGE_SUFFIXES):
            items.append(Item(image=image, image_id=image.stem, source=masks_root / image.stem))
        known = {item.image_id for item in items}
        for folder in sorted(p for p in masks_root.iterdir() if p.is_dir()):
            if folder.name not in known and not folder.name.startswith("."):
                self.reject(
                    str(folder),
                    f"{folder}: mask folder has no image {folder.name}.<ext> in {images_dir}",
                )
        return items

    def read_objects(self, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """One object per mask file of the item's masks folder (nonzero pixels)."""
        folder: Path = item.source
        if not folder.is_dir():
            raise DataError(f"{item.image}: its masks folder {folder} is missing")
        files = _visible(folder, LABEL_SUFFIXES)
        if not files:
            raise DataError(
                f"{folder}: no mask files ({', '.join(LABEL_SUFFIXES)}) for {item.image}"
            )
        masks = []
        for file in files:
            mask = read_label_map(file) != 0
            if mask.shape != tuple(size):
                raise DataError(
                    f"{file}: mask is {mask.shape[0]}x{mask.shape[1]} (HxW) but its image "
                    f"{item.image} is {size[0]}x{size[1]}"
                )
            masks.append(mask)
        item.meta["mask_files"] = [str(f) for f in files]
        if not masks:
            return no_objects(size)
        return np.stack(masks), np.ones(len(masks), dtype=np.int64)
