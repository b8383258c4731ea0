"""Check a dataset before training: read every file, count objects, list problems and outliers.

Works on any :class:`~samtune.data.datamodules.base.SamDataModule` whose datasets follow the
``on_error`` policy: build the datamodule with ``on_error="skip"`` so every bad file is
recorded instead of stopping at the first, then call :func:`check_datamodule`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from samtune.data.check_clips import check_clip_split, format_clip_split
from samtune.data.datasets.videos import ClipDataset
from samtune.data.datasets.volumes import VolumeSliceDataset
from samtune.data.drops import DROP_LABELS, drop_counts, empty_split_reason
from samtune.data.pairing import format_pairing
from samtune.data.sample import DataError, ignored_pixels
from samtune.data.transforms import areas_at_size, kept_area

SPLITS = ("train", "val", "test")
OPTIONAL_SPLITS = ("test",)
# dataset counts of where ignored pixels come from, with what they count
IGNORE_STATS = {
    "crowd_ignored": "iscrowd annotations turned into ignore regions",
    "ignore_shapes": "__ignore__ shapes",
    "without_ignore_mask": "images without a data.ignore_masks mask",
}


def check_datamodule(
    datamodule: Any,
    *,
    splits: tuple[str, ...] | list[str] = SPLITS,
    tiny_area: float | None = None,
    size_outlier_factor: float = 2.0,
) -> dict[str, Any]:
    """Read every item of every split and report counts, outliers and bad files.

    Per split: images (slices, for volumes) and objects, objects per class, images without
    objects, empty masks, tiny masks (fewer than ``tiny_area`` pixels, and at least 1, once
    resized to the datamodule's ``image_size`` exactly as training resizes them: the objects
    training and evaluation drop), usable images (those keeping at least one object), every
    drop category the dataset counted (``drops``), image sizes and size outliers, the pixels
    marked "not labelled" (``ignore``: images holding any, the pixel count and the fraction of
    all pixels, and the dataset's counts of where they came from: iscrowd annotations,
    ``__ignore__`` shapes, images without a ``data.ignore_masks`` mask), and every file the
    dataset could not use. For volume datasets also: volumes, their shapes and voxel
    spacings with outliers, and per class the volumes and voxels holding it.

    A split with no usable image is a problem (``ok`` False) whose reason names the split and
    why; lost data that leaves images usable is listed under ``warnings``.

    A size (or a volume's extent or spacing along an axis) is an outlier when it is more than
    ``size_outlier_factor`` times the split's median, or less than the median divided by it.

    Args:
        datamodule: the datamodule, built with ``on_error="skip"`` to list all problems.
        splits: the splits to check. A split in ``OPTIONAL_SPLITS`` (test), or one missing from
            the datamodule's ``defined_splits`` where it lists them (a dataset shipped as a
            single split), that the datamodule does not define is noted and passed over; any
            other split that cannot be built is an error.
        tiny_area: masks below this many pixels at ``image_size`` are tiny; None uses the
            datamodule's ``min_object_area``.
        size_outlier_factor: the outlier factor (> 1).

    Returns:
        ``{"ok", "datamodule", "image_size", "tiny_area", "size_outlier_factor", "splits":
        {split: {...}}, "problems": [{"split", "file", "reason"}], "warnings": [str]}``; ``ok``
        is False when any file is bad, a split could not be built or has no usable image.

    Raises:
        ValueError: ``size_outlier_factor <= 1`` or a negative ``tiny_area``.
    """
    if not size_outlier_factor > 1:
        raise ValueError(f"size_outlier_factor must be > 1, got {size_outlier_factor!r}")
    image_size = int(datamodule.image_size)
    if tiny_area is None:
        tiny_area = float(getattr(datamodule, "min_object_area", 0))
    if tiny_area < 0:
        raise ValueError(f"tiny_area must be >= 0, got {tiny_area!r}")
    report: dict[str, Any] = {
        "ok": True,
        "datamodule": type(datamodule).__name__,
        "image_size": image_size,
        "tiny_area": tiny_area,
        "size_outlier_factor": float(size_outlier_factor),
        "splits": {},
        "problems": [],
        "warnings": [],
    }
    for split in splits:
        try:
            dataset = datamodule.raw_dataset(split)
        except Exception as err:  # a split that is not defined, or cannot be built at all
            undefined = isinstance(err, (ValueError, NotImplementedError)) and not isinstance(
                err, DataError
            )
            defined = getattr(datamodule, "defined_splits", None)
            optional = split in OPTIONAL_SPLITS or (defined is not None and split not in defined)
            if optional and undefined:
                report["splits"][split] = {"status": "not defined", "message": str(err)}
                continue
            message = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
            report["splits"][split] = {"status": "error", "message": message}
            report["problems"].append({"split": split, "file": None, "reason": message})
            continue
        report["splits"][split] = _check_split(
            dataset, image_size=image_size, tiny_area=tiny_area, factor=size_outlier_factor
        )
    skipped = datamodule.skipped_files() if hasattr(datamodule, "skipped_files") else {}
    for split, entry in report["splits"].items():
        if entry.get("status") != "checked":
            continue
        found: dict[str, str] = {}
        for file, reason in entry.pop("_problems") + list(skipped.get(split, [])):
            found.setdefault(str(file), str(reason))
        entry["problems"] = [{"file": f, "reason": r} for f, r in sorted(found.items())]
        entry["bad_files"] = len(found)
        report["problems"] += [{"split": split, **p} for p in entry["problems"]]
        _judge_split(report, split, entry, image_size=image_size, tiny_area=tiny_area)
    if report["problems"]:
        report["ok"] = False
    return report


def _judge_split(
    report: dict[str, Any], split: str, entry: dict[str, Any], *, image_size: int, tiny_area: float
) -> None:
    """Fill ``entry["drops"]``; add a problem when no image is usable, warnings for lost data."""
    stats = dict(entry["dataset_stats"])
    stats["skipped"] = entry["bad_files"]
    entry["drops"] = {key: count for key, _, count in drop_counts(stats)}
    entry["drops"]["tiny_at_image_size"] = entry["tiny_masks"]
    size, kept = f"{image_size}x{image_size} px", kept_area(tiny_area)
    if entry["usable_images"] == 0:
        if entry["images"] == 0:
            why = empty_split_reason(stats, entry.get("empty_note"))
        elif entry["read"] == 0:
            why = f"none of its {entry['images']} image(s) could be read"
        elif entry["objects"] == 0:
            why = f"none of its {entry['read']} image(s) holds an object"
        else:
            why = (
                f"all {entry['objects']} object(s) in {entry['read']} image(s) are below {kept} "
                f"px once resized to {size} (model.image_size), so training and evaluation drop "
                "them; lower data.min_object_area or raise model.image_size"
            )
        entry["unusable"] = f"the {split} split has no usable image: {why}"
        report["problems"].append({"split": split, "file": None, "reason": entry["unusable"]})
    volumes = entry["kind"] == "volume slices"
    for key, count in entry["drops"].items():
        if not count or key == "skipped" or (volumes and key == "dropped_images"):
            continue  # bad files are problems already; volumes leave empty slices out by design
        label = DROP_LABELS.get(key, f"objects below {kept} px at {size} (dropped in training)")
        report["warnings"].append(f"{split}: {count} {label}")
    lost = entry["images_without_objects_at_size"]
    if lost and entry["usable_images"]:
        report["warnings"].append(f"{split}: {lost} image(s) keep no object at {size}")


class _SliceTally:
    """Counts over the items (images or slices) of one split."""

    def __init__(self, *, image_size: int, tiny_area: float) -> None:
        self.image_size, self.tiny_area = image_size, tiny_area
        self.counts = {
            "read": 0,
            "objects": 0,
            "images_without_objects": 0,
            "usable_images": 0,
            "images_without_objects_at_size": 0,
        }
        self.ignore = {"images": 0, "pixels": 0, "all_pixels": 0}
        self.classes: dict[int, dict[str, Any]] = defaultdict(
            lambda: {"name": None, "objects": 0, "images": 0}
        )
        self.sizes: list[tuple[str, int, int]] = []
        self.empty: list[str] = []
        self.tiny: list[dict[str, Any]] = []

    def add(self, sample: Any) -> None:
        self.counts["read"] += 1
        height, width = sample.image.shape[:2]
        name = _item_name(sample)
        self.sizes.append((name, int(height), int(width)))
        ignored = ignored_pixels(sample)
        self.ignore["images"] += int(ignored > 0)
        self.ignore["pixels"] += ignored
        self.ignore["all_pixels"] += int(height) * int(width)
        n = int(sample.masks.shape[0])
        self.counts["objects"] += n
        if n == 0:
            self.counts["images_without_objects"] += 1
            return
        areas = sample.masks.reshape(n, -1).sum(axis=1).tolist()
        resized = areas_at_size(sample.masks, self.image_size).tolist()
        if max(resized) >= kept_area(self.tiny_area):
            self.counts["usable_images"] += 1
        else:
            self.counts["images_without_objects_at_size"] += 1
        names = sample.meta.get("class_names") or {}
        class_ids = [int(c) for c in sample.class_ids.tolist()]
        for obj, (class_id, area, area_at) in enumerate(zip(class_ids, areas, resized)):
            entry = self.classes[class_id]
            entry["name"] = str(names.get(class_id, names.get(str(class_id), class_id)))
            entry["objects"] += 1
            if area == 0:
                self.empty.append(f"{name} object {obj}")
            elif area_at < kept_area(self.tiny_area):
                self.tiny.append(
                    {
                        "item": name,
                        "object": obj,
                        "area": int(area),
                        "area_at_image_size": int(area_at),
                    }
                )
        for class_id in set(class_ids):
            self.classes[class_id]["images"] += 1


def _check_split(
    dataset: Any, *, image_size: int, tiny_area: float, factor: float
) -> dict[str, Any]:
    if isinstance(dataset, ClipDataset):
        return check_clip_split(dataset, image_size=image_size, tiny_area=tiny_area)
    tally = _SliceTally(image_size=image_size, tiny_area=tiny_area)
    problems: list[tuple[str, str]] = []
    volume_info = None
    if isinstance(dataset, VolumeSliceDataset):
        volume_info = _check_volumes(dataset, tally, factor=factor, problems=problems)
    else:
        for index in range(len(dataset)):
            sample = dataset[index]
            if sample is not None:  # a None item: the dataset recorded why
                tally.add(sample)
    median = _median([(h, w) for _, h, w in tally.sizes])
    entry: dict[str, Any] = {
        "status": "checked",
        "kind": "images" if volume_info is None else "volume slices",
        "images": len(dataset),
        **tally.counts,
        "classes": {str(c): tally.classes[c] for c in sorted(tally.classes)},
        "empty_masks": len(tally.empty),
        "empty_mask_items": tally.empty,
        "tiny_masks": len(tally.tiny),
        "tiny_mask_items": tally.tiny,
        "sizes": _range([(h, w) for _, h, w in tally.sizes]),
        # a volume's slices share one size: volumes have shape and spacing outliers instead
        "size_outliers": []
        if volume_info is not None
        else [
            {"item": name, "size": [h, w]}
            for name, h, w in tally.sizes
            if _is_outlier((h, w), median, factor)
        ],
        "ignore": _ignore_entry(tally, dict(getattr(dataset, "stats", {}))),
        "dataset_stats": dict(getattr(dataset, "stats", {})),
        "empty_note": getattr(dataset, "empty_note", None),
        "_problems": problems,
    }
    pairing = getattr(dataset, "pairing", None)
    if pairing is not None:
        entry["pairing"] = pairing.as_dict()
    if volume_info is not None:
        entry["volumes"] = volume_info
    return entry


def _ignore_entry(tally: _SliceTally, stats: dict[str, Any]) -> dict[str, Any]:
    """The "not labelled" pixels of the items read: how many items hold any, how many pixels
    and what fraction of all pixels, and where they came from (dataset counts)."""
    total = tally.ignore["all_pixels"]
    entry: dict[str, Any] = {
        "images": tally.ignore["images"],
        "pixels": tally.ignore["pixels"],
        "fraction": tally.ignore["pixels"] / total if total else 0.0,
    }
    for key in IGNORE_STATS:
        if key in stats:
            entry[key] = int(stats[key])
    return entry


def _check_volumes(
    dataset: Any, tally: _SliceTally, *, factor: float, problems: list[tuple[str, str]]
) -> dict[str, Any]:
    """Read each volume of a ``VolumeSliceDataset`` once, then its kept slices (from the cache)."""
    items: dict[str, list[int]] = defaultdict(list)
    for index in range(len(dataset)):
        items[dataset.slice_at(index)[0]].append(index)
    shapes, spacings, units = {}, {}, {}
    classes: dict[int, dict[str, int]] = defaultdict(lambda: {"volumes": 0, "voxels": 0})
    without_objects = []
    for pair in dataset.pairs:
        try:
            dataset.image_volume(pair.case)
            label = dataset.label_volume(pair.case)
        except DataError as err:
            problems.append((str(pair.image), str(err)))
            continue
        shapes[pair.case] = tuple(int(n) for n in pair.geometry.shape)
        spacings[pair.case] = tuple(float(s) for s in pair.geometry.spacing)
        units[pair.case] = pair.geometry.spacing_unit
        values, voxels = np.unique(label, return_counts=True)
        present = [
            (int(v), int(n))
            for v, n in zip(values, voxels)
            if v != 0 and (dataset.classes is None or int(v) in dataset.classes)
        ]
        if not present:
            without_objects.append(pair.case)
        for value, n in present:
            classes[value]["volumes"] += 1
            classes[value]["voxels"] += n
        for index in items.get(pair.case, []):
            sample = dataset[index]
            if sample is not None:
                tally.add(sample)
    names = dict(dataset.classes or {})
    shape_median = _median(list(shapes.values()))
    spacing_median = _median(list(spacings.values()))
    return {
        "count": len(dataset.pairs),
        "read": len(shapes),
        "axis": int(dataset.axis),
        "shapes": _range(list(shapes.values())),
        "spacing": _range(list(spacings.values())),
        "spacing_unit": _spacing_unit(units),
        "spacing_units": {
            u: sum(1 for v in units.values() if v == u) for u in sorted(set(units.values()))
        },
        "spacing_mm": _range([s for c, s in spacings.items() if units[c] == "mm"]),
        "shape_outliers": [
            {"volume": c, "shape": list(s)}
            for c, s in shapes.items()
            if _is_outlier(s, shape_median, factor)
        ],
        "spacing_outliers": [
            {"volume": c, "spacing": list(s), "unit": units[c]}
            for c, s in spacings.items()
            if _is_outlier(s, spacing_median, factor)
        ],
        "classes": {str(c): {"name": names.get(c, str(c)), **classes[c]} for c in sorted(classes)},
        "volumes_without_objects": without_objects,
    }


def _spacing_unit(units: dict[str, str]) -> str:
    """The unit the volumes' spacings are in: one unit, or each with its count when mixed."""
    found = sorted(set(units.values()))
    if len(found) <= 1:
        return found[0] if found else "mm"
    counts = {u: sum(1 for v in units.values() if v == u) for u in found}
    return "mixed: " + ", ".join(f"{u} ({n} volumes)" for u, n in counts.items())


def _item_name(sample: Any) -> str:
    meta = sample.meta
    if "volume" in meta and "slice" in meta:
        return f"{meta['volume']} slice {meta['slice']}"
    return str(meta.get("file", meta.get("image_id", "?")))


def _median(values: list[tuple[float, ...]]) -> tuple[float, ...] | None:
    if not values:
        return None
    return tuple(float(v) for v in np.median(np.asarray(values, dtype=np.float64), axis=0))


def _range(values: list[tuple[float, ...]]) -> dict[str, list[float]] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": array.min(axis=0).tolist(),
        "median": np.median(array, axis=0).tolist(),
        "max": array.max(axis=0).tolist(),
    }


def _is_outlier(value: tuple[float, ...], median: tuple[float, ...] | None, factor: float) -> bool:
    if median is None:
        return False
    for v, m in zip(value, median):
        if m > 0 and (v > m * factor or v < m / factor):
            return True
    return False


def format_check(report: dict[str, Any], *, max_listed: int = 20) -> str:
    """The check as text for the terminal: one block per split, then the verdict.

    Args:
        report: from :func:`check_datamodule`.
        max_listed: at most this many entries of each list are printed (the JSON has all).
    """
    size = f"{report['image_size']}x{report['image_size']} px"
    kept = kept_area(report["tiny_area"])
    lines = [
        f"samtune data check: {report.get('data') or report['datamodule']} "
        f"at {report['image_size']} px (tiny: < {kept:g} px at that size)"
    ]
    for split, entry in report["splits"].items():  # the pairing used, before anything else
        lines += format_pairing(entry.get("pairing"), split=split)
    for split, entry in report["splits"].items():
        if entry["status"] != "checked":
            lines.append(f"{split}: {entry['status']}: {entry['message']}")
            continue
        unit = {"volume slices": "slices", "clips": "videos"}.get(entry["kind"], "images")
        lines.append(
            f"{split}: {entry['images']} {unit} ({entry['read']} read), {entry['objects']} "
            f"objects, {entry['images_without_objects']} {unit} without objects"
        )
        volumes = entry.get("volumes")
        if entry["kind"] == "clips":
            lines += format_clip_split(entry, max_listed)
        elif volumes is not None:
            lines.append(
                f"  volumes: {volumes['count']} ({volumes['read']} read), sliced along axis "
                f"{volumes['axis']}; shape {_fmt_range(volumes['shapes'])}; spacing "
                f"{_fmt_range(volumes['spacing'])} {volumes['spacing_unit']}"
            )
            if volumes["spacing_unit"] != "mm":
                lines.append(
                    "  spacing: a volume in a unit other than mm gives no length (a TIFF stack "
                    "without calibration): its spacing is as stored, in its own unit"
                )
            stats = entry["dataset_stats"]
            if "slices_with_objects" in stats:
                lines.append(
                    f"  slices with objects: {stats['slices_with_objects']}; slices without "
                    f"objects left out (empty_slice_rate): {stats.get('dropped_images', 0)}"
                )
            for c, info in volumes["classes"].items():
                lines.append(
                    f"  volumes holding class {c} ({info['name']}): {info['volumes']}, "
                    f"{info['voxels']} voxels in all"
                )
            _listed(
                lines, "volumes without objects", volumes["volumes_without_objects"], max_listed
            )
            _listed(
                lines,
                "shape outliers",
                [f"{o['volume']} {tuple(o['shape'])}" for o in volumes["shape_outliers"]],
                max_listed,
            )
            _listed(
                lines,
                "spacing outliers",
                [
                    f"{o['volume']} {tuple(o['spacing'])} {o['unit']}"
                    for o in volumes["spacing_outliers"]
                ],
                max_listed,
            )
        else:
            lines.append(f"  sizes (HxW) {_fmt_range(entry['sizes'])}")
            extra = {
                k: v
                for k, v in entry.get("dataset_stats", {}).items()
                if k not in _COMMON_STATS and k not in IGNORE_STATS and isinstance(v, int)
            }
            if extra:
                lines.append("  also: " + ", ".join(f"{k} {v}" for k, v in extra.items()))
            _listed(
                lines,
                "size outliers",
                [f"{o['item']} {o['size'][0]}x{o['size'][1]}" for o in entry["size_outliers"]],
                max_listed,
            )
        for c, info in entry["classes"].items() if entry["kind"] != "clips" else ():
            lines.append(
                f"  class {c} ({info['name']}): {info['objects']} objects in {info['images']} {unit}"
            )
        ignore = entry.get("ignore")
        if ignore is not None and (ignore["pixels"] or len(ignore) > 3):
            sources = "".join(
                f"; {label}: {ignore[key]}" for key, label in IGNORE_STATS.items() if key in ignore
            )
            lines.append(
                f"  ignored (not labelled) pixels: {ignore['pixels']} in {ignore['images']} of "
                f"{entry['read']} {unit} ({100 * ignore['fraction']:.2f}% of all pixels){sources}"
            )
        lines.append(f"  empty masks: {entry['empty_masks']}, tiny masks: {entry['tiny_masks']}")
        lines.append(
            f"  usable {unit} at {size}: {entry['usable_images']} of {entry['images']} "
            f"(keeping at least one object of >= {kept:g} px)"
        )
        lines.append("  dropped:")
        for key, count in entry["drops"].items():
            label = DROP_LABELS.get(key, f"objects below {kept:g} px at {size}")
            lines.append(f"    {label}: {count}")
        if entry.get("unusable"):
            lines.append(f"  NO USABLE {unit.upper()}: {entry['unusable']}")
        _listed(lines, "empty masks", entry["empty_mask_items"], max_listed)
        _listed(
            lines,
            "tiny masks",
            [
                f"{t['item']} object {t['object']}: {t['area']} px, "
                f"{t['area_at_image_size']} px at {report['image_size']} px"
                for t in entry["tiny_mask_items"]
            ],
            max_listed,
        )
        _listed(
            lines,
            "BAD FILES",
            [
                p["reason"] if p["file"] in p["reason"] else f"{p['file']}: {p['reason']}"
                for p in entry["problems"]
            ],  # fmt: skip
            max_listed,
        )
    usable = ", ".join(
        f"{split} {entry['usable_images']}"
        for split, entry in report["splits"].items()
        if entry["status"] == "checked"
    )
    warnings = report.get("warnings", [])
    if not report["ok"]:
        empty = [split for split, entry in report["splits"].items() if entry.get("unusable")]
        lines.append(
            f"FAILED: {len(report['problems'])} problem(s) (bad files or splits"
            + (f"; no usable image in: {', '.join(empty)}" if empty else "")
            + ")"
        )
    elif warnings:
        lines.append(f"WARNINGS: {len(warnings)} (data lost; usable images: {usable}):")
        lines += [f"  {w}" for w in warnings]
    else:
        lines.append(f"OK: no bad files, nothing dropped; usable images: {usable}")
    return "\n".join(lines)


_COMMON_STATS = (
    "images", "objects", "dropped_empty", "dropped_small", "dropped_images", "skipped",
)  # fmt: skip


def _listed(lines: list[str], title: str, items: list[str], max_listed: int) -> None:
    if not items:
        return
    lines.append(f"  {title} ({len(items)}):")
    lines += [f"    {item}" for item in items[:max_listed]]
    if len(items) > max_listed:
        lines.append(f"    ... and {len(items) - max_listed} more (see data_check.json)")


def _fmt_range(value: dict[str, list[float]] | None) -> str:
    if value is None:
        return "-"

    def one(v: list[float]) -> str:
        return "x".join(f"{x:g}" if not math.isnan(x) else "?" for x in v)

    return f"min {one(value['min'])}, median {one(value['median'])}, max {one(value['max'])}"
