"""Semantic masks with several classes: objects are the connected regions of each class.

A mask holds, per pixel, a class: as a value (``{1: tumour, 2: stroma}``; palette PNGs give
their palette index) or as a colour (``{tumour: [255, 0, 0], stroma: [0, 128, 255]}``). Each
connected component of a class is one object of that class (``connectivity`` 8 or 4), and the
class names travel in ``meta["class_names"]`` into the per-class evaluation results. Pixels of
values or colours not in the table are background; they are counted (``unlisted_pixels``).
Pixels of ``void_value`` (by default 255 in a palette PNG: PASCAL VOC's border) are neither a
class nor background but "not labelled": the sample's ignore mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from samtune.data.datasets.folder import (
    DEFAULT_CONNECTIVITY,
    FolderDataset,
    _Pair,
    structure_for,
    void_pixels,
)
from samtune.data.io import TIFF_SUFFIXES, read_label_map
from samtune.data.sample import DataError


def parse_class_table(
    classes: Mapping[Any, Any],
) -> tuple[dict[int, str], dict[int, int] | None, dict[tuple[int, int, int], int] | None]:
    """``(names, value_to_class, colour_to_class)`` of a class table; class ids are 1, 2, ...

    Args:
        classes: ``{mask value: name}`` (values > 0), or ``{name: [r, g, b]}`` (a palette).

    Raises:
        ValueError: an empty table, a value that is not a positive integer, or a colour that is
            not three numbers 0..255 (naming the entry).
    """
    if not classes:
        raise ValueError("classes must list the classes: {value: name} or {name: [r, g, b]}")
    items = list(classes.items())
    if all(isinstance(v, Sequence) and not isinstance(v, str) for _, v in items):
        colours: dict[tuple[int, int, int], int] = {}
        names = {}
        for k, (name, colour) in enumerate(items, start=1):
            rgb = tuple(int(c) for c in colour)
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ValueError(f"class {name!r}: a colour is [r, g, b] in 0..255, got {colour!r}")
            colours[rgb] = k
            names[k] = str(name)
        return names, None, colours
    names, values = {}, {}
    for k, (value, name) in enumerate(items, start=1):
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if isinstance(value, bool) or number <= 0 or str(number) != str(value).strip():
            raise ValueError(
                f"class keys must be mask values (integers > 0) or, for a palette, the values "
                f"must be colours [r, g, b]; got {value!r}: {name!r}"
            )
        values[number] = k
        names[k] = str(name)
    return names, values, None


def read_colour_mask(path: Path) -> np.ndarray:
    """A mask as ``H x W x 3`` uint8 RGB (palette images through their palette).

    Raises:
        DataError: naming the file.
    """
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            array = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as image:
                array = np.array(image.convert("RGB"))
    except Exception as err:
        raise DataError(f"{path}: cannot read colour mask: {err}") from err
    if array.ndim != 3 or array.shape[2] < 3 or array.dtype != np.uint8:
        raise DataError(
            f"{path}: a palette mask must be 8-bit RGB, got {array.shape} {array.dtype}"
        )
    return array[:, :, :3]


class SemanticFolderDataset(FolderDataset):
    """Image and semantic-mask folders (paired as :class:`~samtune.data.datasets.folder.FolderDataset`
    pairs them), objects being the connected regions of each class.

    Args:
        classes: the class table (see :func:`parse_class_table`).
        connectivity: 8 (default) or 4.
        **kwargs: the :class:`FolderDataset` arguments (``images``, ``masks``, ``mask_suffix``,
            ``on_error``, ``min_area``).
    """

    def __init__(
        self,
        *,
        classes: Mapping[Any, Any],
        connectivity: int = DEFAULT_CONNECTIVITY,
        **kwargs: Any,
    ) -> None:
        self.names, self.values, self.colours = parse_class_table(classes)
        self._unlisted: set[int] = set()
        super().__init__(mask_type="semantic", connectivity=connectivity, **kwargs)
        self.counts.setdefault("unlisted_pixels", 0)
        if self.counts["objects"] == 0 and self._unlisted:
            found = sorted(self._unlisted)[:8]
            shown = [self._describe(code) for code in found]
            raise DataError(
                f"{self.masks_dir}: no mask pixel matches the class table {classes!r}; the masks "
                f"hold {', '.join(shown)}" + (" ..." if len(self._unlisted) > 8 else "")
            )

    def _describe(self, code: int) -> str:
        if self.colours is None:
            return f"value {code}"
        return f"colour [{code >> 16}, {(code >> 8) & 255}, {code & 255}]"

    @staticmethod
    def mask_types() -> tuple[str, ...]:
        """Only ``"semantic"``."""
        return ("semantic",)

    def class_names(self) -> dict[int, str]:
        """``{class id: name}`` of the table."""
        return dict(self.names)

    def _objects(self, pair: _Pair) -> tuple[np.ndarray, dict[int, int] | None, np.ndarray | None]:
        class_map, unlisted, void = self._class_map(pair.mask)
        pair.mask_type = "semantic"
        pair.extra["unlisted_pixels"] = unlisted
        labels = np.zeros(class_map.shape, dtype=np.int64)
        class_of: dict[int, int] = {}
        structure = structure_for(self.connectivity)
        for class_id in np.unique(class_map[class_map != 0]):
            components, count = ndimage.label(class_map == class_id, structure=structure)
            start = len(class_of)
            labels[components != 0] = components[components != 0] + start
            class_of.update({start + k: int(class_id) for k in range(1, count + 1)})
        return labels, class_of, void

    def _class_map(self, path: Path) -> tuple[np.ndarray, int, np.ndarray | None]:
        """``H x W`` class ids (0: background, unlisted or void), the number of unlisted
        pixels, and the void ("not labelled") pixels or None."""
        if self.colours is not None:
            rgb = read_colour_mask(path).astype(np.int64)
            codes = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
            table = {(r << 16) | (g << 8) | b: k for (r, g, b), k in self.colours.items()}
            void = (
                None
                if self.void_value is None
                else void_pixels(path, read_label_map(path), self.void_value)
            )
        else:
            codes = read_label_map(path)
            table = dict(self.values or {})
            void = void_pixels(path, codes, self.void_value)
        class_map = np.zeros(codes.shape, dtype=np.int64)
        for code, class_id in table.items():
            class_map[codes == code] = class_id
        if void is not None:
            class_map[void] = 0
        unlisted_mask = (class_map == 0) & (codes != 0)
        if void is not None:
            unlisted_mask &= ~void
        if unlisted_mask.any() and len(self._unlisted) < 64:
            self._unlisted.update(int(c) for c in np.unique(codes[unlisted_mask])[:64])
        return class_map, int(unlisted_mask.sum()), void

    def _index_pair(self, pair: _Pair) -> bool:
        kept = super()._index_pair(pair)
        self.counts["unlisted_pixels"] = self.counts.get("unlisted_pixels", 0) + int(
            pair.extra.get("unlisted_pixels", 0)
        )
        return kept
