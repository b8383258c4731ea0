"""VOS folders as SAM 2 trains on them: DAVIS, MOSE and YouTube-VOS, read as they ship.

Layouts (``root`` is the folder given as ``data.root``)::

    DAVIS 2017      root/JPEGImages/480p/<video>/00000.jpg     root/Annotations/480p/<video>/00000.png
                    root/ImageSets/2017/train.txt (one video name a line; also val.txt)
    MOSE            root/train/JPEGImages/<video>/00000.jpg    root/train/Annotations/<video>/00000.png
    YouTube-VOS     root/train/JPEGImages/<video>/00000.jpg    root/train/Annotations/<video>/00000.png
                    root/train/meta.json (optional: object categories)
    any of them     root/JPEGImages/<video>/...                 root/Annotations/<video>/...

``split`` picks ``root/<split>/`` when that folder holds ``JPEGImages`` (MOSE, YouTube-VOS),
else the list file ``root/ImageSets/2017/<split>.txt`` (or ``ImageSets/<split>.txt``; DAVIS); a
``list_file`` given explicitly wins. ``resolution`` picks DAVIS' level (``480p``, found by itself
when it is the only one, or ``Full-Resolution``).

Annotations are palette PNGs whose index is the object id (0 background), the same id on every
frame of a video, as ``PalettisedPNGSegmentLoader`` reads them. A frame without a PNG (YouTube-VOS
annotates every 5th frame in train, only first appearances in valid) is not annotated: not scored
and not supervised. ``void_value`` (255, DAVIS' void/boundary label) is never an object; set it
to None for annotations that use 255 as an object id. With YouTube-VOS' ``meta.json`` the object
categories become class ids (categories in sorted order, from 1) with their names in
``meta["class_names"]``; the list of videos then comes from the folder, as SAM 2 reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from samtune.data.datasets.videos.base import ClipDataset
from samtune.data.datasets.videos.frame_folders import natural_key, video_source
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.sample import DataError

DAVIS_RESOLUTIONS = ("480p", "Full-Resolution")
LIST_FOLDERS = ("ImageSets/2017", "ImageSets/2016", "ImageSets")


class VosDataset(ClipDataset):
    """The videos of a DAVIS / MOSE / YouTube-VOS folder as clips (see the module docstring).

    Args:
        root: the dataset folder.
        split: ``train``, ``val``, ``valid``... (see the module docstring), or None for every
            video under ``root/JPEGImages``.
        list_file: a text file of video names (one a line), or None.
        resolution: DAVIS' resolution folder, or None to find it.
        image_dir: name of the frames folder.
        annotation_dir: name of the annotations folder.
        void_value: label value that is never an object (None: none).
        **kwargs: the :class:`ClipDataset` arguments (``sampling``, ``seed``, ``repeats``,
            ``on_error``).

    Raises:
        DataError: no frames folder, no list file for ``split``, or (``on_error="raise"``) a bad
            video: a listed video without frames, a label map without a frame.
    """

    def __init__(
        self,
        *,
        root: str | Path,
        split: str | None = None,
        list_file: str | Path | None = None,
        resolution: str | None = None,
        image_dir: str = "JPEGImages",
        annotation_dir: str = "Annotations",
        void_value: int | None = 255,
        sampling: ClipSampling | None = None,
        seed: int = 0,
        repeats: int = 1,
        on_error: str = "raise",
    ) -> None:
        super().__init__(sampling=sampling, seed=seed, repeats=repeats, on_error=on_error)
        self.root = Path(root)
        base, listed = self._base_and_list(split, list_file, image_dir)
        images, annotations = base / image_dir, base / annotation_dir
        level = resolution or _davis_level(images)
        if level is not None:
            images, annotations = images / level, annotations / level
            if not images.is_dir():
                raise DataError(f"{images}: no such folder (data.resolution={level!r})")
        self.images_dir, self.annotations_dir = images, annotations
        categories, names = _youtube_categories(base / "meta.json")
        videos = sorted(
            (p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda n: natural_key(Path(n)),
        )
        if listed is not None:
            missing = [v for v in listed if v not in set(videos)]
            for video in missing:
                self.reject(
                    str(images / video),
                    f"{images / video}: listed in {self.list_file} but there is no such folder",
                )
            videos = [v for v in listed if v not in set(missing)]
        for video in videos:
            source = video_source(
                video,
                images / video,
                annotations / video,
                suffixes=(),
                problem=self.reject,
                void_value=void_value,
                categories=categories.get(video),
                class_names=names or None,
            )
            if source is not None:
                self.add_source(source)
        if not self.sources and not self.skipped:
            self.empty_note = f"no video folder with annotations under {images}"

    def _base_and_list(
        self, split: str | None, list_file: str | Path | None, image_dir: str
    ) -> tuple[Path, list[str] | None]:
        root = self.root
        if not root.is_dir():
            raise DataError(f"{root}: no such folder (data.root)")
        base = root
        if split and (root / split / image_dir).is_dir():
            base = root / split
        self.list_file: Path | None = Path(list_file) if list_file else None
        if self.list_file is None and split and base == root:
            found = [root / f / f"{split}.txt" for f in LIST_FOLDERS]
            self.list_file = next((p for p in found if p.is_file()), None)
            if self.list_file is None:
                raise DataError(
                    f"{root}: no split {split!r}: neither a folder {root / split / image_dir} "
                    f"nor a list file {found[0]} (give data.list_file=..., or a split that exists)"
                )
        if not (base / image_dir).is_dir():
            raise DataError(
                f"{base}: no {image_dir}/ folder (expected {base / image_dir}/<video>/<frame>.jpg)"
            )
        if self.list_file is None:
            return base, None
        try:
            lines = self.list_file.read_text().splitlines()
        except OSError as err:
            raise DataError(f"{self.list_file}: cannot read the list of videos: {err}") from err
        names = [os.path.splitext(line.strip())[0] for line in lines]  # as SAM 2 reads it
        return base, [n for n in dict.fromkeys(names) if n]


def _davis_level(images: Path) -> str | None:
    """DAVIS' resolution folder under ``JPEGImages`` (``480p`` first), or None."""
    for level in DAVIS_RESOLUTIONS:
        if (images / level).is_dir():
            return level
    return None


def _youtube_categories(meta_file: Path) -> tuple[dict[str, dict[int, int]], dict[int, str]]:
    """``({video: {object id: class id}}, {class id: category})`` from YouTube-VOS' meta.json
    (empty when there is none).

    Raises:
        DataError: the file is not YouTube-VOS' ``{"videos": {video: {"objects": ...}}}``.
    """
    if not meta_file.is_file():
        return {}, {}
    try:
        videos = json.loads(meta_file.read_text())["videos"]
        objects = {
            video: {int(k): str(v["category"]) for k, v in entry["objects"].items()}
            for video, entry in videos.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(
            f"{meta_file}: not YouTube-VOS' meta.json "
            f'({{"videos": {{video: {{"objects": {{id: {{"category": ...}}}}}}}}}}): {err!r}'
        ) from err
    names = sorted({c for per in objects.values() for c in per.values()})
    number = {name: k for k, name in enumerate(names, start=1)}
    categories = {video: {i: number[c] for i, c in per.items()} for video, per in objects.items()}
    return categories, {k: name for name, k in number.items()}
