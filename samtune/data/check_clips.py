"""``samtune-check-data`` for clip datasets: videos, frames, annotated frames, objects, tracks.

Each video is read frame by frame (every frame image and every label map, so a corrupt file is
found and named) without building whole-video clips. The split's entry fits the one
:mod:`samtune.data.check` builds for images, so the verdict and the drop list are judged the
same way; "images" there are videos here.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from samtune.data.datasets.videos import ClipDataset
from samtune.data.datasets.videos.ctc import CtcSequence
from samtune.data.sample import DataError
from samtune.data.transforms import areas_at_size, kept_area


def check_clip_split(dataset: ClipDataset, *, image_size: int, tiny_area: float) -> dict[str, Any]:
    """Read every frame of every video of ``dataset`` and count (see the module docstring).

    Returns:
        The split's entry: ``kind`` ``"clips"``, ``images`` and ``videos`` (videos kept),
        ``read`` (videos read without a bad file), ``frames``, ``annotated_frames``,
        ``objects`` and ``tracks`` (distinct object ids per video, summed), ``object_masks``
        (an object on an annotated frame), ``classes``, ``tiny_masks`` (object masks below
        ``tiny_area`` px at ``image_size``), ``usable_images`` (videos with an object of at
        least that size), ``videos_without_objects``, ``sizes``, ``time_lapse`` (CTC:
        ``untracked_segments``, ``marker_masks``) and the common keys.
    """
    problems: list[tuple[str, str]] = []
    classes: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"name": None, "objects": 0, "images": 0}
    )
    tally = {"read": 0, "object_masks": 0, "tracks": 0, "usable_images": 0}
    tiny: list[dict[str, Any]] = []
    without, lost, sizes = [], [], []
    time_lapse = {"untracked_segments": 0, "marker_masks": 0}
    kept = kept_area(tiny_area)
    for source in dataset.sources:
        tracks: set[int] = set()
        usable = False
        bad = False
        for t in range(source.num_frames):
            try:
                frame = source.read_frames([t])[0]
                labels = source.read_labels([t])[0]
            except DataError as err:
                problems.append((source.file, str(err)))
                bad = True
                continue
            if t == 0:
                sizes.append(frame.shape[:2])
            if frame.shape[:2] != sizes[-1] or labels.shape != frame.shape[:2]:
                problems.append(
                    (
                        source.file,
                        f"{source.file}: frame {t} is {frame.shape[:2]}, the first "
                        f"{sizes[-1]}, its label map {labels.shape}",
                    )  # fmt: skip
                )
                bad = True
                continue
            ids = np.unique(labels)
            ids = ids[ids != 0]
            if not source.annotated[t] or not ids.size:
                continue
            masks = labels[None] == ids[:, None, None]
            at_size = areas_at_size(masks, image_size)
            tally["object_masks"] += len(ids)
            tracks.update(int(i) for i in ids)
            for object_id, area in zip(ids.tolist(), at_size.tolist()):
                if area < kept:
                    tiny.append({"item": f"{source.name} frame {t}", "object": object_id,
                                 "area": int(masks[ids.tolist().index(object_id)].sum()),
                                 "area_at_image_size": int(area)})  # fmt: skip
                else:
                    usable = True
        if isinstance(source, CtcSequence):
            time_lapse["untracked_segments"] += sum(source.untracked.values())
            time_lapse["marker_masks"] += sum(len(v) for v in source.from_markers.values())
        tally["read"] += not bad
        tally["tracks"] += len(tracks)
        tally["usable_images"] += usable
        if not tracks:
            without.append(source.name)
        elif not usable:
            lost.append(source.name)
        ids = np.array(sorted(tracks), dtype=np.int64)
        names = source.meta().get("class_names") or {}
        for class_id in source.class_ids_of(ids).tolist():
            entry = classes[int(class_id)]
            entry["name"] = str(names.get(class_id, names.get(str(class_id), class_id)))
            entry["objects"] += 1
        for class_id in set(source.class_ids_of(ids).tolist()):
            classes[int(class_id)]["images"] += 1
    stats = dict(dataset.stats)
    sizes_arr = np.asarray(sizes, dtype=np.float64) if sizes else None
    return {
        "status": "checked",
        "kind": "clips",
        "images": len(dataset.sources),
        "videos": len(dataset.sources),
        "frames": stats["frames"],
        "annotated_frames": stats["annotated_frames"],
        **tally,
        "objects": tally["tracks"],
        "images_without_objects": len(without),
        "images_without_objects_at_size": len(lost),
        "videos_without_objects": without,
        "classes": {str(c): classes[c] for c in sorted(classes)},
        "empty_masks": 0,
        "empty_mask_items": [],
        "tiny_masks": len(tiny),
        "tiny_mask_items": tiny,
        "sizes": None
        if sizes_arr is None
        else {
            "min": sizes_arr.min(axis=0).tolist(),
            "median": np.median(sizes_arr, axis=0).tolist(),
            "max": sizes_arr.max(axis=0).tolist(),
        },
        "size_outliers": [],
        "time_lapse": time_lapse
        if any(isinstance(s, CtcSequence) for s in dataset.sources)
        else None,
        "dataset_stats": stats,
        "empty_note": getattr(dataset, "empty_note", None),
        "_problems": problems,
    }


def format_clip_split(entry: dict[str, Any], max_listed: int) -> list[str]:
    """The lines :func:`samtune.data.check.format_check` prints for a clip split (before the
    common drop, tiny-mask and bad-file lists)."""
    stats = entry["dataset_stats"]
    lines = [
        f"  videos: {entry['videos']} ({entry['read']} read without a bad file), frames "
        f"{entry['frames']}, annotated frames {entry['annotated_frames']}",
        f"  tracks (objects kept across frames): {entry['tracks']}, object masks on annotated "
        f"frames: {entry['object_masks']}",
        f"  left out: {stats.get('too_short', 0)} videos shorter than one training clip, "
        f"{stats.get('without_annotations', 0)} without any annotated frame",
    ]
    if entry["sizes"]:
        low, high = entry["sizes"]["min"], entry["sizes"]["max"]
        lines.append(f"  frame sizes (HxW) min {low[0]:g}x{low[1]:g}, max {high[0]:g}x{high[1]:g}")
    if entry.get("time_lapse"):
        tl = entry["time_lapse"]
        lines.append(
            f"  time-lapse: {tl['untracked_segments']} segments without a track marker (left "
            f"out), {tl['marker_masks']} cells not segmented on an annotated frame (their marker "
            "is their mask)"
        )
    for c, info in entry["classes"].items():
        lines.append(
            f"  class {c} ({info['name']}): {info['objects']} tracks in {info['images']} videos"
        )
    without = entry["videos_without_objects"]
    if without:
        lines.append(f"  videos without objects ({len(without)}):")
        lines += [f"    {v}" for v in without[:max_listed]]
    return lines
