"""Per-volume evaluation of a slice dataset: 3D Dice per class per volume, for each protocol.

The evaluator's final mask of every object (``keep_masks=True``) is put back at its slice, the
masks of one class are OR-ed into one 3D volume, and each class is scored against the whole
ground-truth label volume: slices that got no prompt (no object of the class there, or the
slice was not kept) count as predicting nothing, so ground truth missed there is a false
negative. A class in neither the prediction nor the ground truth of a volume scores NaN and is
left out of the means (see ``samtune.evaluation.volumes``).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from samtune.evaluation.document import Block, Heading, Paragraph, Table
from samtune.evaluation.results import EvalResult
from samtune.evaluation.volumes import (
    SlicePrediction,
    stack_slice_predictions,
    summarize_dice,
    volume_dice,
)

PER_VOLUME_COLUMNS = (
    "protocol", "volume", "class_id", "class_name", "dice", "gt_voxels", "pred_voxels",
)  # fmt: skip


def is_volume_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a slice dataset of volumes (per-volume evaluation applies)."""
    from samtune.data.volumes import VolumeSliceDataset

    return isinstance(dataset, VolumeSliceDataset)


def evaluate_dataset(
    evaluator: Any,
    model: Any,
    dataset: Any,
    *,
    device: Any = "cpu",
    max_images: int | None = None,
) -> tuple[EvalResult, dict[str, Any] | None]:
    """Run ``evaluator`` on ``dataset``; on a volume dataset also score whole volumes.

    On a volume dataset the evaluator keeps its predicted masks for this run (whatever its
    ``keep_masks``), they are scored with :func:`volume_evaluation`, and then dropped from the
    rows unless the evaluator was set to keep them.

    Args:
        evaluator: a :class:`~samtune.evaluation.Evaluator`.
        model: the model to evaluate.
        dataset: Samples (any dataset the evaluator takes).
        device: where to run.
        max_images: stop after this many items (None: all).

    Returns:
        ``(result, volumes)``; ``volumes`` is None unless ``dataset`` is a volume dataset.
    """
    if not is_volume_dataset(dataset):
        return evaluator.evaluate(model, dataset, device=device, max_images=max_images), None
    keep = evaluator.keep_masks
    evaluator.keep_masks = True
    try:
        result = evaluator.evaluate(model, dataset, device=device, max_images=max_images)
    finally:
        evaluator.keep_masks = keep
    volumes = volume_evaluation(result, dataset, evaluated_items=max_images)
    if not keep:
        for row in result.rows:
            row.mask = None  # scored; free the memory
    return result, volumes


def volume_evaluation(
    result: EvalResult, dataset: Any, *, evaluated_items: int | None = None
) -> dict[str, Any]:
    """3D Dice per protocol, volume and class, from an evaluation with ``keep_masks=True``.

    Volumes are scored one at a time (one label volume and its predictions in memory).

    Args:
        result: what ``Evaluator.evaluate`` returned for ``dataset``.
        dataset: the evaluated ``VolumeSliceDataset``; a row's ``image_id`` is its item index.
        evaluated_items: how many leading items the evaluation went through (its
            ``max_images``), or None for all. A volume with a kept slice beyond that is left
            out (listed in ``excluded``): its Dice would count unevaluated slices as misses.

    Returns:
        ``{"axis", "classes": {id: name}, "cases": [scored cases], "excluded": {case: reason},
        "protocols": {protocol: {"per_volume", "volume_mean", "class_mean", "mean",
        "n_volumes", "voxels": {case: {id: {"gt": n, "pred": n}}}}}}``. Class ids are strings
        (as in ``results.json``); a Dice is NaN where it is undefined.

    Raises:
        ValueError: a row without a mask (evaluate with ``keep_masks=True``), or a row whose
            item is not in ``dataset``.
    """
    limit = len(dataset) if evaluated_items is None else min(len(dataset), int(evaluated_items))
    where = [dataset.slice_at(i) for i in range(len(dataset))]
    excluded: dict[str, str] = {}
    for index in range(limit, len(dataset)):
        case = where[index][0]
        excluded.setdefault(
            case,
            f"not all kept slices evaluated (max_images={evaluated_items}); "
            "its Dice would count them as misses",
        )
    records: dict[str, dict[str, list[SlicePrediction]]] = {
        p: defaultdict(list) for p in result.protocols
    }
    for row in result.rows:
        if row.mask is None:
            raise ValueError(
                "per-volume evaluation needs the predicted masks: evaluate with keep_masks=True"
            )
        index = int(row.image_id)
        if not 0 <= index < len(dataset) or str(dataset.file_of(index)) != row.file:
            raise ValueError(
                f"evaluated item {row.image_id!r} ({row.file}) is not item {row.image_id!r} of "
                "the volume dataset; evaluate the dataset itself, in order"
            )
        case, slice_index = where[index]
        records[row.protocol][case].append(
            SlicePrediction(
                volume=case,
                slice=slice_index,
                axis=dataset.axis,
                class_id=row.class_id,
                mask=row.mask,
            )
        )
    names: dict[int, str] = dict(dataset.classes or {})
    scores: dict[str, dict[str, dict[int, float]]] = {p: {} for p in result.protocols}
    voxels: dict[str, dict[str, dict[int, dict[str, int]]]] = {p: {} for p in result.protocols}
    cases = [case for case in dataset.cases if case not in excluded]
    for case in cases:
        gt = dataset.label_volume(case)
        shape = {case: gt.shape}
        present = [int(v) for v in np.unique(gt) if v != 0]
        for protocol in result.protocols:
            predicted = stack_slice_predictions(records[protocol].get(case, []), shape)[case]
            if dataset.classes is None:  # every label value of this volume, and any predicted
                ids = sorted(set(present) | set(predicted))
                for class_id in ids:
                    names.setdefault(class_id, str(class_id))
            else:
                ids = sorted(names)
            if not ids:
                scores[protocol][case], voxels[protocol][case] = {}, {}
                continue
            scores[protocol][case] = volume_dice(predicted, gt, ids)
            voxels[protocol][case] = {
                c: {
                    "gt": int(np.count_nonzero(gt == c)),
                    "pred": int(predicted[c].sum()) if c in predicted else 0,
                }
                for c in ids
            }
    classes = {c: names[c] for c in sorted(names)}
    protocols: dict[str, Any] = {}
    for protocol in result.protocols:
        if classes:
            summary = summarize_dice(scores[protocol], classes)
        else:  # no class anywhere: nothing to score
            summary = {"classes": {}, "per_volume": {c: {} for c in cases}, "volume_mean": {},
                       "class_mean": {}, "mean": math.nan, "n_volumes": len(cases)}  # fmt: skip
        for case in cases:
            for c in classes:
                voxels[protocol][case].setdefault(c, {"gt": 0, "pred": 0})
        summary["voxels"] = voxels[protocol]
        protocols[protocol] = _str_keys(summary)
    return {
        "axis": int(dataset.axis),
        "classes": {str(c): n for c, n in classes.items()},
        "cases": cases,
        "excluded": excluded,
        "protocols": protocols,
    }


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _str_keys(v) for k, v in obj.items()}
    return obj


def write_per_volume_csv(volumes: dict[str, Any], path: str | Path) -> Path:
    """Write ``per_volume.csv``: one row per protocol, volume and class.

    Columns: ``protocol, volume, class_id, class_name, dice, gt_voxels, pred_voxels``; an
    undefined Dice (class in neither volume) is an empty cell.
    """
    path = Path(path)
    import io

    from samtune.io_atomic import write_text_atomic

    with io.StringIO(newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_VOLUME_COLUMNS)
        writer.writeheader()
        for protocol, summary in volumes["protocols"].items():
            for case, per_class in summary["per_volume"].items():
                for class_id, dice in per_class.items():
                    counts = summary["voxels"].get(case, {}).get(class_id, {})
                    writer.writerow(
                        {
                            "protocol": protocol,
                            "volume": case,
                            "class_id": class_id,
                            "class_name": volumes["classes"].get(class_id, class_id),
                            "dice": "" if _missing(dice) else f"{float(dice):.6f}",
                            "gt_voxels": counts.get("gt", ""),
                            "pred_voxels": counts.get("pred", ""),
                        }
                    )
        write_text_atomic(path, handle.getvalue())
    return path


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def volume_blocks(volumes: dict[str, Any]) -> list[Block]:
    """The report section: mean 3D Dice per protocol and class, then one row per volume."""
    classes = volumes["classes"]
    protocols = volumes["protocols"]
    blocks: list[Block] = [
        Heading("Per volume (3D Dice)"),
        Paragraph(
            f"Each protocol's final masks are stacked back along axis {volumes['axis']} and each "
            "class is scored with Dice over the whole ground-truth volume: slices that got no "
            "prompt count as predicting nothing, so objects missed there are false negatives. "
            "A class in neither prediction nor ground truth of a volume is left out (–). "
            "Mean: over volumes per class, then over classes."
        ),
    ]
    header = ["protocol", "volumes", "mean Dice"] + [f"Dice {name}" for name in classes.values()]
    rows = [
        [p, s["n_volumes"], s["mean"]] + [s["class_mean"].get(c) for c in classes]
        for p, s in protocols.items()
    ]
    blocks.append(Table(header, rows))
    header = ["volume"]
    for p in protocols:
        header += [f"{p} mean"] + [f"{p} {name}" for name in classes.values()]
    rows = []
    for case in volumes["cases"]:
        row: list[Any] = [case]
        for s in protocols.values():
            per_class = s["per_volume"].get(case, {})
            row += [s["volume_mean"].get(case)] + [per_class.get(c) for c in classes]
        rows.append(row)
    blocks.append(Table(header, rows))
    if volumes["excluded"]:
        blocks.append(
            Paragraph(
                "Not scored: "
                + "; ".join(f"{case} ({why})" for case, why in volumes["excluded"].items())
            )
        )
    return blocks
