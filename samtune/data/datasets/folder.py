"""A folder of images and a folder of masks, paired by file name, as a dataset of ``Sample``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from samtune.data.datasets.base import SampleDataset
from samtune.data.io import IMAGE_SUFFIXES, LABEL_SUFFIXES, read_image, read_label_map, read_size
from samtune.data.pairing import Pairing, PairRow, check_pair_by, compile_pattern, pair_by_pattern
from samtune.data.sample import DataError, Sample

MASK_TYPES = ("auto", "instance", "binary")
MASK_SUFFIXES = (
    "_mask", "_masks", "-mask", "_label", "_labels", "-label", "_seg", "-seg", "_gt", "_instances",
)  # fmt: skip
IMAGE_NAME_SUFFIXES = ("_image", "-image", "_img")
CONNECTIVITY = (4, 8)
DEFAULT_CONNECTIVITY = 8
VOC_VOID = 255  # PASCAL VOC's palette index for "not labelled" (object borders, hard regions)


@dataclass
class _Pair:
    image: Path
    mask: Path
    objects: int = 0
    dropped_small: int = 0
    mask_type: str = "instance"
    extra: dict[str, int] = field(default_factory=dict)


def mask_suffixes(mask_suffix: str | Sequence[str] | None) -> tuple[str, ...]:
    """The mask-name suffixes to try: ``mask_suffix`` (one or several), or the built-in list.

    Raises:
        ValueError: an empty suffix or list, or a value that is not text.
    """
    if mask_suffix is None:
        return MASK_SUFFIXES
    values = [mask_suffix] if isinstance(mask_suffix, str) else list(mask_suffix)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ValueError(
            f"mask_suffix must be a non-empty suffix or list of suffixes (e.g. '_segmentation'), "
            f"got {mask_suffix!r}"
        )
    return tuple(values)


def mask_key(mask: Path, suffixes: Sequence[str] = MASK_SUFFIXES) -> list[str]:
    """Image stems a mask file may belong to, most specific first.

    A mask pairs with the image of the same stem (``cell1.png`` -> ``cell1.tif``), or, if its
    stem ends with one of ``suffixes`` (by default :data:`MASK_SUFFIXES`), with the image named
    without that suffix (``cell1_mask.png`` -> ``cell1.png``). Matching is case-sensitive.
    """
    stem = mask.stem
    keys = [stem]
    for suffix in suffixes:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            keys.append(stem[: -len(suffix)])
    return keys


def structure_for(connectivity: int) -> np.ndarray:
    """The ``scipy.ndimage.label`` structure of 4- or 8-connectivity.

    Raises:
        ValueError: ``connectivity`` is not 4 or 8.
    """
    if connectivity not in CONNECTIVITY:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    if connectivity == 8:
        return np.ones((3, 3), dtype=bool)
    return ndimage.generate_binary_structure(2, 1)


def label_objects(
    label_map: np.ndarray, mask_type: str, connectivity: int = DEFAULT_CONNECTIVITY
) -> tuple[np.ndarray, str]:
    """Number the objects of a mask file: ``(labels, resolved_type)``.

    ``"instance"``: each distinct nonzero value is one object (even if in several pieces).
    ``"binary"``: every nonzero pixel is foreground (0/1 and 0/255 alike) and each connected
    component is one object; ``connectivity`` 8 (the default) joins pixels that touch at a
    corner, 4 only those that share an edge (use 4 for membrane or boundary maps, where cells
    meet across a diagonal gap). ``"auto"``: binary when the map holds at most two distinct
    values, 0 and one other (or a single value), instance otherwise.

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
        labels, _ = ndimage.label(label_map != 0, structure=structure_for(connectivity))
        return labels, "binary"
    return label_map, "instance"


def check_void_value(void_value: int | str | None) -> int | str | None:
    """``data.void_value`` checked: ``"auto"``, None or a label value >= 0.

    Raises:
        ValueError: anything else (naming the value).
    """
    if void_value is None or void_value == "auto":
        return void_value
    if isinstance(void_value, bool) or not isinstance(void_value, (int, np.integer)):
        raise ValueError(
            f"data.void_value must be auto, null or a mask value (e.g. 255), got {void_value!r}"
        )
    if void_value < 0:
        raise ValueError(f"data.void_value must be a mask value >= 0, got {void_value!r}")
    return int(void_value)


def is_palette_png(path: Path) -> bool:
    """Whether ``path`` is a palette (``P`` mode) PNG, as PASCAL VOC's masks are (header only)."""
    if path.suffix.lower() != ".png":
        return False
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.mode == "P"
    except Exception:  # unreadable: the label-map reader names the problem
        return False


def void_pixels(path: Path, codes: np.ndarray, void_value: int | str | None) -> np.ndarray | None:
    """The pixels of mask ``path`` (read as ``codes``) that mark "not labelled", or None.

    ``void_value="auto"``: value 255 of a palette PNG (PASCAL VOC's border and hard regions);
    other masks have none (255 in a grey mask is usually foreground). A number: that value in
    any mask. None: no pixel.
    """
    if void_value is None:
        return None
    if void_value == "auto":
        if not is_palette_png(path):
            return None
        void_value = VOC_VOID
    void = codes == int(void_value)
    return void if void.any() else None


class FolderDataset(SampleDataset):
    """Image files and mask files in two folders, paired by file stem (see :func:`mask_key`).

    Images: ``.png .jpg .jpeg .bmp .tif .tiff``; masks: ``.png .bmp .tif .tiff`` label maps,
    read by :func:`~samtune.data.io.read_label_map`. Other files (and hidden ones) are ignored.
    Images and masks may share one folder when the masks carry a suffix.

    Indexing (construction) pairs the files, reads both headers to compare sizes, and reads every
    mask once to count its objects (so counts are known and bad masks found before training).
    Objects below ``min_area`` pixels are dropped (``dropped_small``), images left without
    objects are dropped (``dropped_images``; ``empty_mask_files`` of them have an all-background
    mask). ``empty_note`` says why the dataset is empty when it is a subset (else None).
    ``class_ids`` are all 1; ``meta`` holds ``file``,
    ``image_id`` (the stem), ``orig_size``, ``mask_file`` and ``mask_type`` (as resolved).
    Mask pixels of ``void_value`` are no object: they are the sample's ignore mask, neither
    supervised nor scored.

    Args:
        images: folder of images.
        masks: folder of masks.
        mask_type: ``"auto"``, ``"instance"`` or ``"binary"`` (see :func:`label_objects`).
        mask_suffix: the suffix (or list of suffixes) mask names carry after the image stem,
            e.g. ``"_segmentation"`` for ``ISIC_0001_segmentation.png``; None tries
            :data:`MASK_SUFFIXES`. A mask named exactly like its image always pairs.
        connectivity: 8 (default) or 4, for splitting binary masks into objects.
        on_error: ``"raise"`` or ``"skip"``.
        min_area: smallest object kept, in pixels at the original resolution.
        pair_by: ``"name"`` (the stem rule above; an image named ``<stem>_image`` also pairs
            with ``<stem>_label``) or ``"pattern"`` (``image_pattern`` / ``mask_pattern``, see
            :mod:`samtune.data.pairing`).
        image_pattern: with ``pair_by="pattern"``: e.g. ``"{id}_training"``.
        mask_pattern: with ``pair_by="pattern"``: e.g. ``"{id}_manual1"``.
        rows: the pairs themselves (from a manifest); ``images`` and ``masks`` are then unused.
        manifest: the manifest ``rows`` come from, named in the pairing rule.
        void_value: the mask value that marks "not labelled" pixels (see :func:`void_pixels`):
            ``"auto"`` (default: 255 in palette PNGs, as PASCAL VOC writes its borders), a
            value, or None.

    Raises:
        DataError: a folder is missing or holds no image; an image has no mask (one error per
            image, naming the suffixes tried), a mask no image, or a file is a broken symbolic
            link (naming the file); a mask's size differs from its image's (naming both files
            and sizes); a file cannot be read.
    """

    def __init__(
        self,
        *,
        images: str | Path | None = None,
        masks: str | Path | None = None,
        mask_type: str = "auto",
        mask_suffix: str | Sequence[str] | None = None,
        connectivity: int = DEFAULT_CONNECTIVITY,
        on_error: str = "raise",
        min_area: int = 1,
        pair_by: str = "name",
        image_pattern: str | None = None,
        mask_pattern: str | None = None,
        rows: Sequence[PairRow] | None = None,
        manifest: str | Path | None = None,
        void_value: int | str | None = "auto",
    ) -> None:
        super().__init__(on_error=on_error, min_area=min_area)
        self.void_value = check_void_value(void_value)
        self.counts["empty_mask_files"] = 0

        self.empty_note: str | None = None
        if mask_type not in self.mask_types():
            raise ValueError(f"mask_type must be one of {self.mask_types()}, got {mask_type!r}")
        structure_for(connectivity)  # checks the value
        self.pair_by = check_pair_by(pair_by)
        if pair_by == "pattern":
            compile_pattern(image_pattern, "data.image_pattern")
            compile_pattern(mask_pattern, "data.mask_pattern")
        if rows is None and (images is None or masks is None):
            raise ValueError("give the images and masks folders, or the pairs (data.pairs)")
        self.images_dir = Path(images) if images is not None else Path(rows[0].image).parent
        self.masks_dir = Path(masks) if masks is not None else Path(rows[0].mask).parent
        self.mask_type = mask_type
        self.suffixes = mask_suffixes(mask_suffix)
        self.connectivity = int(connectivity)
        self.image_pattern, self.mask_pattern = image_pattern, mask_pattern
        rejected = len(self.skipped)
        self._ids: dict[Path, str] = {}
        splits: dict[Path, str | None] = {}
        if rows is not None:
            pairs = [_Pair(image=Path(r.image), mask=Path(r.mask)) for r in rows]
            splits = {Path(r.image): r.split for r in rows}
            rule = f"the pair manifest {manifest or '(data.pairs)'}"
        elif pair_by == "pattern":
            pairs = self._pair_by_pattern()
            rule = f"pattern {image_pattern!r} <-> {mask_pattern!r}"
        else:
            pairs = self._pair_files()
            rule = f"file name (mask suffixes {', '.join(self.suffixes)})"
        self.pairing = Pairing(
            rule=rule,
            rows=[
                PairRow(
                    id=self._ids.get(p.image) or _stem_id(p.image),
                    image=p.image,
                    mask=p.mask,
                    split=splits.get(p.image),
                )
                for p in pairs
            ],
            unpaired=len(self.skipped) - rejected,
        )
        self._pairs: list[_Pair] = []
        for pair in pairs:
            if self._index_pair(pair):
                self._pairs.append(pair)
        self.counts["images"] = len(self._pairs)
        self.counts["objects"] = sum(pair.objects for pair in self._pairs)

    @staticmethod
    def mask_types() -> tuple[str, ...]:
        """The accepted ``mask_type`` values."""
        return MASK_TYPES

    def __len__(self) -> int:
        return len(self._pairs)

    def file_of(self, index: int) -> str:
        """Path of the image at ``index``."""
        return str(self._pairs[index].image)

    def subset(self, indices: list[int], *, keep_rejects: bool = False) -> FolderDataset:
        """A dataset of the items ``indices`` only (same settings, counts recomputed).

        Images skipped or dropped while indexing belong to no item; the ``skipped`` list, the
        ``dropped_images`` count and other whole-folder counts are carried over only with
        ``keep_rejects=True`` (give it to exactly one subset of a split so they count once).
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._pairs = [self._pairs[i] for i in indices]
        clone.skipped = list(self.skipped) if keep_rejects else []
        per_item = ("images", "objects", "dropped_small")
        clone.counts = {
            key: (value if keep_rejects and key not in per_item else 0)
            for key, value in self.counts.items()
        }
        clone.counts["images"] = len(clone._pairs)
        clone.counts["objects"] = sum(pair.objects for pair in clone._pairs)
        clone.counts["dropped_small"] = sum(pair.dropped_small for pair in clone._pairs)
        kept = {pair.image for pair in clone._pairs}
        clone.pairing = Pairing(
            rule=self.pairing.rule,
            rows=[row for row in self.pairing.rows if row.image in kept],
            unpaired=self.pairing.unpaired if keep_rejects else 0,
        )
        return clone

    def load(self, index: int) -> Sample:
        """Read image ``index`` and its mask file, one boolean mask per object."""
        pair = self._pairs[index]
        image = read_image(pair.image)
        labels, class_of, void = self._objects(pair)
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
        if class_of is None:
            return Sample(image=image, masks=masks, meta=meta, ignore=void)
        class_ids = np.array([class_of[int(i)] for i in ids], dtype=np.int64)
        meta["class_names"] = self.class_names()
        return Sample(image=image, masks=masks, class_ids=class_ids, meta=meta, ignore=void)

    def class_names(self) -> dict[int, str]:
        """``{class id: name}`` of the objects (one class, ``1: "object"``, for plain masks)."""
        return {1: "object"}

    def _objects(self, pair: _Pair) -> tuple[np.ndarray, dict[int, int] | None, np.ndarray | None]:
        """``(labels, class_of, void)``: objects numbered in an ``H x W`` map, the class of each
        label value (None: all class 1), and the mask's "not labelled" pixels (or None).
        Subclasses read other mask kinds here."""
        codes = read_label_map(pair.mask)
        void = void_pixels(pair.mask, codes, self.void_value)
        if void is not None:
            codes = np.where(void, 0, codes)
        labels, pair.mask_type = label_objects(codes, self.mask_type, self.connectivity)
        return labels, None, void

    def _index_pair(self, pair: _Pair) -> bool:
        try:
            for path in (pair.image, pair.mask):
                if _is_broken_link(path):
                    raise DataError(_broken_link_message(path))
            image_size, mask_size = read_size(pair.image), read_size(pair.mask)
            if image_size != mask_size:
                raise self._size_error(pair, image_size, mask_size)
            labels, _, _ = self._objects(pair)
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
            self.counts["empty_mask_files"] += int(areas.size == 0)
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

    def _tried(self, stem: str) -> str:
        names = ", ".join(f"{stem}{suffix}" for suffix in ("", *self.suffixes))
        return f"{names} (with {', '.join(LABEL_SUFFIXES)})"

    def _pair_by_pattern(self) -> list[_Pair]:
        for folder, what in ((self.images_dir, "images"), (self.masks_dir, "masks")):
            if not folder.is_dir():
                raise DataError(f"{folder}: {what} folder not found")
        rows, problems = pair_by_pattern(
            _list_files(self.images_dir, IMAGE_SUFFIXES),
            _list_files(self.masks_dir, LABEL_SUFFIXES),
            image_pattern=self.image_pattern,
            mask_pattern=self.mask_pattern,
        )
        for file, message in problems:
            self.reject(file, message)
        self._ids = {r.image: r.id for r in rows}
        return [_Pair(image=r.image, mask=r.mask) for r in rows]

    def _pair_files(self) -> list[_Pair]:
        for folder, what in ((self.images_dir, "images"), (self.masks_dir, "masks")):
            if not folder.is_dir():
                raise DataError(f"{folder}: {what} folder not found")
        same_folder = self.images_dir.resolve() == self.masks_dir.resolve()
        image_files = _list_files(self.images_dir, IMAGE_SUFFIXES)
        mask_files = _list_files(self.masks_dir, LABEL_SUFFIXES)
        if same_folder:
            mask_files = [f for f in mask_files if len(mask_key(f, self.suffixes)) > 1]
            taken = set(mask_files)
            image_files = [f for f in image_files if f not in taken]
        images_by_stem: dict[str, Path] = {}
        broken: set[str] = set()
        for image in image_files:
            if _is_broken_link(image):
                broken.add(image.stem)
                self.reject(str(image), _broken_link_message(image))
                continue
            if image.stem in images_by_stem:
                self.reject(
                    str(image),
                    f"{image}: two images share the stem {image.stem!r} ({images_by_stem[image.stem].name})",
                )
                continue
            images_by_stem[image.stem] = image
        alias: dict[str, str] = {}
        for stem in images_by_stem:
            for suffix in IMAGE_NAME_SUFFIXES:
                short = stem[: -len(suffix)]
                if stem.endswith(suffix) and short and short not in images_by_stem:
                    alias.setdefault(short, stem)
        if not images_by_stem and not broken:
            nested = any((p / "images").is_dir() for p in self.images_dir.iterdir() if p.is_dir())
            hint = (
                "; its subfolders hold images/ folders: for <id>/images + <id>/masks (one mask "
                "file per object) use data=per_object data.root=<this folder>"
                if nested
                else ""
            )
            raise DataError(
                f"{self.images_dir}: no image files ({', '.join(IMAGE_SUFFIXES)}) found" + hint
            )
        mask_for: dict[str, Path | None] = {}
        orphans: list[Path] = []
        for mask in mask_files:
            candidates = mask_key(mask, self.suffixes)
            if any(key in broken for key in candidates):
                continue  # its image is a broken link, already reported
            keys = [
                key if key in images_by_stem else alias[key]
                for key in candidates
                if (key in images_by_stem or key in alias)
                and not (same_folder and key == mask.stem)
            ]
            if not keys:
                orphans.append(mask)
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
        unpaired = [image for stem, image in sorted(images_by_stem.items()) if stem not in mask_for]
        hint = _orphans_hint(orphans)
        for image in unpaired:
            self.reject(
                str(image),
                f"{image}: image has no mask in {self.masks_dir}: looked for "
                f"{self._tried(image.stem)}. If your masks carry another suffix after the image "
                f"name, set it with mask_suffix (e.g. data.mask_suffix=_segmentation)" + hint,
            )
        if not unpaired:  # with unpaired images the orphans are named in their errors
            for mask in orphans:
                self.reject(
                    str(mask),
                    f"{mask}: mask has no image in {self.images_dir}: looked for an image named "
                    f"{' or '.join(mask_key(mask, self.suffixes))} (mask suffixes tried: "
                    f"{', '.join(self.suffixes)}; set others with mask_suffix)",
                )
        for stem, image in sorted(images_by_stem.items()):
            mask = mask_for.get(stem)
            if mask is not None:
                pairs.append(_Pair(image=image, mask=mask))
        return pairs


def _stem_id(path: Path) -> str:
    stem = path.stem
    for suffix in IMAGE_NAME_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _orphans_hint(orphans: list[Path]) -> str:
    if not orphans:
        return ""
    names = ", ".join(m.name for m in orphans[:3])
    more = f" and {len(orphans) - 3} more" if len(orphans) > 3 else ""
    return f"; masks without an image there: {names}{more}"


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _broken_link_message(path: Path) -> str:
    return f"{path}: broken symbolic link: it points to {os.readlink(path)}, which does not exist"


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Visible files with one of ``suffixes``, and broken symbolic links with such a name."""
    return sorted(
        path
        for path in folder.iterdir()
        if (path.is_file() or _is_broken_link(path))
        and not path.name.startswith(".")
        and path.suffix.lower() in suffixes
    )


def _object_areas(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero label values present and their pixel counts."""
    ids, areas = np.unique(labels[labels != 0], return_counts=True)
    return ids, areas
