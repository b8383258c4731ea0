"""What a split lost on the way to the model, in words: drop categories and empty-split reasons.

The datasets count what they leave out while indexing (``stats``); the transform drops objects
that fall below ``min_object_area`` pixels once resized to ``image_size``. These helpers name
those counts the same way in ``samtune-check-data``, in the datamodule's error for an empty
split, and in the training run's error when nothing was left to train on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from samtune.data.sample import DataError

# dataset ``stats`` key -> what it counts (every key a dataset may report, in print order)
DROP_LABELS: dict[str, str] = {
    "dropped_images": "images dropped for having no object",
    "empty_mask_files": "mask files with no object (all background)",
    "dropped_empty": "annotations dropped for an empty mask",
    "dropped_outside": "annotations dropped for lying outside their image",
    "dropped_small": "objects dropped below the dataset's min_area (original size)",
    "too_short": "videos left out for being shorter than one training clip",
    "without_annotations": "videos left out for having no annotated frame",
    "skipped": "images skipped as bad files",
}


class EmptySplitError(DataError):
    """A split has no image to train or evaluate on; the message says which split and why."""


def drop_counts(stats: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """``(key, label, count)`` of every drop category ``stats`` reports, zeros included.

    Args:
        stats: a dataset's ``stats``.
    """
    return [(key, label, int(stats[key])) for key, label in DROP_LABELS.items() if key in stats]


def empty_split_reason(stats: Mapping[str, Any], note: str | None = None) -> str:
    """Why a split whose dataset holds no image is empty, from the dataset's counts.

    Args:
        stats: the dataset's ``stats`` (``dropped_images``, ``dropped_empty``, ...).
        note: what the dataset says about itself when empty (its ``empty_note``), e.g. that
            it is split off another split's files; it comes first.

    Returns:
        A phrase such as ``"all 12 masks are empty (6 images dropped for having no object)"``.
    """
    empty = int(stats.get("dropped_empty", 0))
    outside = int(stats.get("dropped_outside", 0))
    small = int(stats.get("dropped_small", 0))
    crowd = int(stats.get("crowd_ignored", 0))
    images = int(stats.get("dropped_images", 0))
    skipped = int(stats.get("skipped", 0))
    blank = int(stats.get("empty_mask_files", 0))
    causes = [note] if note else []
    if blank:
        causes.append(f"{blank} mask file(s) hold no object (all background)")
    if empty:
        causes.append(f"{empty} mask(s) are empty")
    if outside:
        causes.append(f"{outside} annotation(s) lie outside their image")
    if small:
        causes.append(f"{small} object(s) are below the dataset's min_area")
    if crowd:
        causes.append(
            f"{crowd} annotation(s) are crowd regions (iscrowd=1: not labelled, no objects)"
        )
    if skipped:
        causes.append(f"{skipped} image(s) were skipped as bad files")
    if int(stats.get("too_short", 0)):
        causes.append(
            f"{stats['too_short']} video(s) are shorter than one training clip "
            "(data.num_frames x data.stride)"
        )
    if int(stats.get("without_annotations", 0)):
        causes.append(f"{stats['without_annotations']} video(s) have no annotated frame")
    if images and not (empty or outside or small or crowd or blank):
        causes.append(f"{images} image(s) have no annotation")
    if not causes:
        return "the split holds no image file"
    dropped = f" ({images} image(s) dropped for having no object)" if images else ""
    return "; ".join(causes) + dropped


def empty_split_message(
    split: str, stats: Mapping[str, Any], *, source: str = "", note: str | None = None
) -> str:
    """The error text for an empty split, naming it, its source and the reason."""
    where = f" ({source})" if source else ""
    return (
        f"the {split} split{where} has no usable image: {empty_split_reason(stats, note)}. "
        "Run samtune-check-data with the same data settings for the details."
    )


def vanished_message(split: str, objects: int, images: int, image_size: int) -> str:
    """The error text when every object of a split was dropped at ``image_size``."""
    outcome = "nothing was learned" if split == "train" else "there is nothing to score"
    return (
        f"the {split} split has no object left at {image_size}x{image_size} px: all {objects} "
        f"object(s) in {images} image(s) are smaller than data.min_object_area pixels (or vanish) "
        f"once resized to model.image_size, so {outcome}. Lower data.min_object_area, "
        "raise model.image_size, or run samtune-check-data to see the objects' sizes."
    )
