"""A folder of images and a folder of masks, paired by file name, as a dataset of ``Sample``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from samtune.data.datasets.base import SampleDataset
from samtune.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label_map, read_size
from samtune.data.sample import DataError, Sample

MASK_TYPES = ("auto", "instance", "binary")
MASK_SUFFIXES = ("_mask", "_masks", "-mask", "_label", "_labels", "_seg", "_gt", "_instances")


@dataclass
class _Pair:
    image: Path
    mask: Path
    objects: int = 0
    dropped_small: int = 0
    mask_type: str = "instance"
    extra: dict[str, int] = field(default_factory=dict)


def mask_key(mask: Path) -> list[str]:
    """Image stems a mask file may belong to, most specific first.

    A mask pairs with the image of the same stem (``cell1.png`` -> ``cell1.tif``), or, if its
    stem ends with one of :data:`MASK_SUFFIXES`, with the image named without that suffix
    (``cell1_mask.png`` -> ``cell1.png``). Matching is case-sensitive.
    """
    stem = mask.stem
    keys = [stem]
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            keys.append(stem[: -len(suffix)])
    return keys


def label_objects(label_map: np.ndarray, mask_type: str) -> tuple[np.ndarray, str]:
    """Number the objects of a mask file: ``(labels, resolved_type)``.

    ``"instance"``: each distinct nonzero value is one object (even if in several pieces).
    ``"binary"``: every nonzero pixel is foreground (0/1 and 0/255 alike) and each
    8-connected component is one object. ``"auto"``: binary when the map holds at most two
    distinct values, 0 and one other (or a single value), instance otherwise.

    Returns:
        ``labels`` (``H x W`` int, 0 background, objects numbered by their original value for
        instance maps and by component for binary masks) and the type used.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    if mask_type == "auto":
        values = np.unique(label_map)
        mask_type = "binary" if np.count_nonzero(values) <= 1 else "instance"
    if mask_type == "binary":
        labels, _ = ndimage.label(label_map != 0, structure=np.ones((3, 3), dtype=bool))
        return labels, "binary"
    return label_map, "instance"


class FolderDataset(SampleDataset):
    """Image files and mask files in two folders, paired by file stem (see :func:`mask_key`).

    Images: ``.png .jpg .jpeg .bmp .tif .tiff``; masks: ``.png .bmp .tif .tiff`` label maps,
    read by :func:`~samtune.data.io.read_label_map`. Other files (and hidden ones) are ignored.
    Images and masks may share one folder when the masks carry a suffix.

    Indexing (construction) pairs the files, reads both headers to compare sizes, and reads every
    mask once to count its objects (so counts are known and bad masks found before training).
    Objects below ``min_area`` pixels are dropped (``dropped_small``), images left without
    objects are dropped (``dropped_images``). ``class_ids`` are all 1; ``meta`` holds ``file``,
    ``image_id`` (the stem), ``orig_size``, ``mask_file`` and ``mask_type`` (as resolved).

    Args:
        images: folder of images.
        masks: folder of masks.
        mask_type: ``"auto"``, ``"instance"`` or ``"binary"`` (see :func:`label_objects`).
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.

    Raises:
        DataError: a folder is missing or holds no image; an image has no mask or a mask no image
            (naming the file); a mask's size differs from its image's (naming both files and
            sizes); a file cannot be read.
    """

    def __init__(
        self,
        *,
        images: str | Path,
        masks: str | Path,
        mask_type: str = "auto",
        on_error: str = "raise",
        min_area: int = 1,
    ) -> None:
        super().__init__(on_error=on_error, min_area=min_area)
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        self.images_dir, self.masks_dir, self.mask_type = Path(images), Path(masks), mask_type
        pairs = self._pair_files()
        self._pairs: list[_Pair] = []
        for pair in pairs:
            if self._index_pair(pair):
                self._pairs.append(pair)
        self.counts["images"] = len(self._pairs)
        self.counts["objects"] = sum(pair.objects for pair in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def file_of(self, index: int) -> str:
        """Path of the image at ``index``."""
        return str(self._pairs[index].image)

    def subset(self, indices: list[int], *, keep_rejects: bool = False) -> FolderDataset:
        """A dataset of the items ``indices`` only (same settings, counts recomputed).

        Images skipped or dropped while indexing belong to no item; the ``skipped`` list and the
        ``dropped_images`` count are carried over only with ``keep_rejects=True`` (give it to
        exactly one subset of a split so they are reported once).
        """
        clone = object.__new__(FolderDataset)
        clone.__dict__.update(self.__dict__)
        clone._pairs = [self._pairs[i] for i in indices]
        clone.skipped = list(self.skipped) if keep_rejects else []
        clone.counts = {key: 0 for key in self.counts}
        if keep_rejects:
            clone.counts["dropped_images"] = self.counts["dropped_images"]
        clone.counts["images"] = len(clone._pairs)
        clone.counts["objects"] = sum(pair.objects for pair in clone._pairs)
        clone.counts["dropped_small"] = sum(pair.dropped_small for pair in clone._pairs)
        return clone

    def load(self, index: int) -> Sample:
        """Read image ``index`` and its mask file, one boolean mask per object."""
        pair = self._pairs[index]
        image = read_image(pair.image)
        labels, _ = self._objects(pair)
        if labels.shape != image.shape[:2]:
            raise self._size_error(pair, image.shape[:2], labels.shape)
        ids, areas = _object_areas(labels)
        ids = ids[areas >= self.min_area]
        masks = labels[None] == ids[:, None, None]
        meta = {
            "file": str(pair.image),
            "image_id": pair.image.stem,
            "orig_size": tuple(image.shape[:2]),
            "mask_file": str(pair.mask),
            "mask_type": pair.mask_type,
        }
        return Sample(image=image, masks=masks, meta=meta)

    def _objects(self, pair: _Pair) -> tuple[np.ndarray, str]:
        labels, pair.mask_type = label_objects(read_label_map(pair.mask), self.mask_type)
        return labels, pair.mask_type

    def _index_pair(self, pair: _Pair) -> bool:
        try:
            image_size, mask_size = read_size(pair.image), read_size(pair.mask)
            if image_size != mask_size:
                raise self._size_error(pair, image_size, mask_size)
            labels, _ = self._objects(pair)
            if labels.shape != image_size:
                raise self._size_error(pair, image_size, labels.shape)
        except DataError as err:
            self.reject(str(pair.image), str(err))
            return False
        _, areas = _object_areas(labels)
        pair.objects = int((areas >= self.min_area).sum())
        pair.dropped_small = int((areas < self.min_area).sum())
        self.counts["dropped_small"] += pair.dropped_small
        if pair.objects == 0:
            self.counts["dropped_images"] += 1
            return False
        return True

    @staticmethod
    def _size_error(
        pair: _Pair, image_size: tuple[int, ...], mask_size: tuple[int, ...]
    ) -> DataError:
        return DataError(
            f"{pair.mask}: mask is {mask_size[0]}x{mask_size[1]} (HxW) but its image {pair.image} "
            f"is {image_size[0]}x{image_size[1]}"
        )

    def _pair_files(self) -> list[_Pair]:
        for folder, what in ((self.images_dir, "images"), (self.masks_dir, "masks")):
            if not folder.is_dir():
                raise DataError(f"{folder}: {what} folder not found")
        same_folder = self.images_dir.resolve() == self.masks_dir.resolve()
        image_files = _list_files(self.images_dir, IMAGE_SUFFIXES)
        mask_files = _list_files(self.masks_dir, LABEL_SUFFIXES)
        if same_folder:
            mask_files = [f for f in mask_files if len(mask_key(f)) > 1]
            taken = set(mask_files)
            image_files = [f for f in image_files if f not in taken]
        images_by_stem: dict[str, Path] = {}
        for image in image_files:
            if image.stem in images_by_stem:
                self.reject(
                    str(image),
                    f"{image}: two images share the stem {image.stem!r} ({images_by_stem[image.stem].name})",
                )
                continue
            images_by_stem[image.stem] = image
        if not images_by_stem:
            raise DataError(
                f"{self.images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) found"
            )
        mask_for: dict[str, Path | None] = {}
        for mask in mask_files:
            keys = [
                key
                for key in mask_key(mask)
                if key in images_by_stem and not (same_folder and key == mask.stem)
            ]
            if not keys:
                self.reject(
                    str(mask),
                    f"{mask}: mask has no image in {self.images_dir} (pairing by file stem)",
                )
                continue
            stem = keys[0]
            if stem in mask_for:
                first = mask_for[stem]
                if first is not None:
                    self.reject(
                        str(images_by_stem[stem]),
                        f"{images_by_stem[stem]}: two masks for one image: {first.name} and {mask.name}",
                    )
                mask_for[stem] = None
                continue
            mask_for[stem] = mask
        pairs = []
        for stem, image in sorted(images_by_stem.items()):
            mask = mask_for.get(stem, False)
            if mask is None:
                continue  # already rejected: two masks
            if mask is False:
                self.reject(
                    str(image),
                    f"{image}: image has no mask in {self.masks_dir} (pairing by file stem)",
                )
                continue
            pairs.append(_Pair(image=image, mask=mask))
        return pairs


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in suffixes
    )


def _object_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero label values present and their pixel counts."""
    ids, areas = np.unique(labels[labels != 0], return_counts=True)
    return ids, areas
