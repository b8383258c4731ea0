"""A plain folder of frames and a folder of per-frame label images, as clips.

Two layouts, told apart by what ``images`` holds::

    one video per subfolder    images/<video>/<frame>.png     labels/<video>/<frame>.png
    a single video             images/<frame>.png             labels/<frame>.png

Frames are any image ``read_image`` reads (PNG, JPEG, BMP, TIFF; 16-bit and grey converted to
8-bit RGB), ordered by the numbers in their names. A label image pairs with the frame of the same
stem, or the stem followed by a mask suffix (``_mask``, ``_label``, ... as ``data=folder``); its
values are object ids that mean the same object on every frame (0 background). Frames without a
label image are not annotated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from samtune.data.datasets.folder import mask_suffixes
from samtune.data.datasets.videos.base import ClipDataset
from samtune.data.datasets.videos.frame_folders import natural_key, video_source
from samtune.data.datasets.videos.sampling import ClipSampling
from samtune.data.io import IMAGE_SUFFIXES
from samtune.data.sample import DataError


class FramesDataset(ClipDataset):
    """Frame folders with per-frame label images (see the module docstring).

    Args:
        images: the frames folder (videos as subfolders, or the frames of one video).
        labels: the label images folder, laid out alike.
        mask_suffix: what follows the frame stem in label names (one or a list); None: the
            built-in list of ``data=folder``.
        **kwargs: the :class:`ClipDataset` arguments.

    Raises:
        DataError: a missing folder, or (``on_error="raise"``) a bad video.
    """

    def __init__(
        self,
        *,
        images: str | Path,
        labels: str | Path,
        mask_suffix: str | Sequence[str] | None = None,
        sampling: ClipSampling | None = None,
        seed: int = 0,
        repeats: int = 1,
        on_error: str = "raise",
    ) -> None:
        super().__init__(sampling=sampling, seed=seed, repeats=repeats, on_error=on_error)
        self.images_dir, self.labels_dir = Path(images), Path(labels)
        for what, folder in (("images", self.images_dir), ("labels", self.labels_dir)):
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder (data.{what})")
        suffixes = mask_suffixes(mask_suffix)
        has_frames = any(
            p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in self.images_dir.iterdir()
        )
        if has_frames:
            videos = [(self.images_dir.name, self.images_dir, self.labels_dir)]
        else:
            videos = [
                (p.name, p, self.labels_dir / p.name)
                for p in sorted(self.images_dir.iterdir(), key=natural_key)
                if p.is_dir() and not p.name.startswith(".")
            ]
        if not videos:
            raise DataError(
                f"{self.images_dir}: neither frame images nor video subfolders "
                "(expected images/<video>/<frame>.png or images/<frame>.png)"
            )
        for name, frames, labels in videos:
            source = video_source(name, frames, labels, suffixes=suffixes, problem=self.reject)
            if source is not None:
                self.add_source(source)
