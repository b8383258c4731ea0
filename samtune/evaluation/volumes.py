"""Per-volume evaluation: stack per-slice predictions into 3D, and 3D Dice per class.

Dice of one class in one volume is ``2 |P & G| / (|P| + |G|)`` over all voxels. When the
class is absent from both the prediction and the ground truth the Dice is undefined: it is
reported as NaN and left out of every mean (a class the model rightly does not predict is
neither rewarded nor punished). A class absent from the ground truth but predicted scores 0.

:func:`volume_evaluation` scores an evaluation of a slice dataset: the evaluator's final mask of
every object (``keep_masks=True``) is put back at its slice, the masks of one class are OR-ed
into one 3D volume, and each class is scored against the whole ground-truth label volume:
slices that got no prompt (no object of the class there, or the slice was not kept) count as
predicting nothing, so ground truth missed there is a false negative.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samtune.data.datasets.volumes.slicing import slice_view
from samtune.evaluation.results import EvalResult

ClassPrediction = Mapping[int, np.ndarray] | np.ndarray


@dataclass(frozen=True)
class SlicePrediction:
    """One predicted object mask on one slice of one volume.

    Attributes:
        volume: the case name (``Sample.meta["volume"]``).
        slice: the slice index along ``axis``.
        axis: the axis the slice was cut along (0, 1 or 2).
        class_id: the object's class (label value).
        mask: ``H x W`` bool, in the slice's own array order (see ``slice_view``).
    """

    volume: str
    slice: int
    axis: int
    class_id: int
    mask: np.ndarray


def _as_record(record: SlicePrediction | Mapping[str, Any]) -> SlicePrediction:
    if isinstance(record, SlicePrediction):
        return record
    missing = {"volume", "slice", "axis", "class_id", "mask"} - set(record)
    if missing:
        raise ValueError(f"prediction record lacks {sorted(missing)}: {sorted(record)}")
    return SlicePrediction(
        volume=str(record["volume"]),
        slice=int(record["slice"]),
        axis=int(record["axis"]),
        class_id=int(record["class_id"]),
        mask=np.asarray(record["mask"]),
    )


def stack_slice_predictions(
    records: Iterable[SlicePrediction | Mapping[str, Any]],
    volume_shapes: Mapping[str, Sequence[int]],
) -> dict[str, dict[int, np.ndarray]]:
    """Put per-slice object masks back into per-class 3D volumes.

    Every object mask is OR-ed into its class's volume at its slice, so several objects of a
    class (instances) merge, and objects of different classes may overlap.

    Args:
        records: ``SlicePrediction``s, or mappings with the keys ``volume``, ``slice``,
            ``axis``, ``class_id`` and ``mask``.
        volume_shapes: ``{case: (ni, nj, nk)}`` for every volume to build (e.g.
            ``VolumeSliceDataset.volume_shapes``).

    Returns:
        ``{case: {class_id: bool volume}}``, with an entry (maybe empty) for every case in
        ``volume_shapes``; a class never predicted in a volume has no key.

    Raises:
        ValueError: a record for an unknown volume, a slice out of range, or a mask whose
            size is not the slice's size.
    """
    shapes = {case: tuple(int(n) for n in shape) for case, shape in volume_shapes.items()}
    out: dict[str, dict[int, np.ndarray]] = {case: {} for case in shapes}
    for raw in records:
        record = _as_record(raw)
        if record.volume not in shapes:
            raise ValueError(
                f"prediction for volume {record.volume!r}, which is not among {sorted(shapes)}"
            )
        shape = shapes[record.volume]
        per_class = out[record.volume]
        if record.class_id not in per_class:
            per_class[record.class_id] = np.zeros(shape, dtype=bool)
        target = slice_view(per_class[record.class_id], axis=record.axis, index=record.slice)
        if record.mask.shape != target.shape:
            raise ValueError(
                f"volume {record.volume!r} slice {record.slice} (axis {record.axis}): mask is "
                f"{record.mask.shape}, expected {target.shape}"
            )
        target |= record.mask.astype(bool)
    return out


def _class_ids(classes: Sequence[int] | Mapping[int, Any]) -> list[int]:
    ids = [int(c) for c in classes]
    if not ids:
        raise ValueError("classes is empty; list the label values to evaluate")
    return ids


def _predicted(pred_volume: ClassPrediction, class_id: int, shape: tuple[int, ...]) -> np.ndarray:
    if isinstance(pred_volume, Mapping):
        mask = pred_volume.get(class_id)
        return np.zeros(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    return np.asarray(pred_volume) == class_id


def volume_dice(
    pred_volume: ClassPrediction,
    gt_volume: np.ndarray,
    classes: Sequence[int] | Mapping[int, Any],
) -> dict[int, float]:
    """3D Dice per class.

    Args:
        pred_volume: ``{class_id: bool volume}`` (as from ``stack_slice_predictions``) or an
            integer label volume.
        gt_volume: the ground-truth integer label volume.
        classes: the label values to score (a list, or a ``{value: name}`` mapping).

    Returns:
        ``{class_id: dice}``; NaN where the class is in neither volume.

    Raises:
        ValueError: a predicted volume whose shape differs from the ground truth.
    """
    gt_volume = np.asarray(gt_volume)
    scores: dict[int, float] = {}
    for class_id in _class_ids(classes):
        pred = _predicted(pred_volume, class_id, gt_volume.shape)
        if pred.shape != gt_volume.shape:
            raise ValueError(
                f"class {class_id}: predicted volume is {pred.shape}, ground truth is {gt_volume.shape}"
            )
        gt = gt_volume == class_id
        total = int(pred.sum()) + int(gt.sum())
        overlap = int(np.logical_and(pred, gt).sum())
        scores[class_id] = float("nan") if total == 0 else 2.0 * overlap / total
    return scores


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarize_volumes(
    predictions: Mapping[str, ClassPrediction],
    gt_volumes: Mapping[str, np.ndarray],
    classes: Sequence[int] | Mapping[int, Any],
) -> dict[str, Any]:
    """Per-volume, per-class Dice and their means.

    Args:
        predictions: ``{case: prediction}``, each as accepted by ``volume_dice``. A case of
            ``gt_volumes`` missing here counts as predicting nothing.
        gt_volumes: ``{case: ground-truth label volume}``; every case is scored.
        classes: the label values to score, or ``{value: name}``.

    Returns:
        A dict with ``classes`` (``{class_id: name}``), ``per_volume``
        (``{case: {class_id: dice}}``), ``volume_mean`` (``{case: mean over its classes}``),
        ``class_mean`` (``{class_id: mean over volumes}``), ``mean`` (mean of the class means,
        each class weighted equally) and ``n_volumes``. NaN Dice values are left out of every
        mean; a mean with nothing to average is NaN.

    Raises:
        ValueError: a prediction for a case with no ground truth.
    """
    extra = sorted(set(predictions) - set(gt_volumes))
    if extra:
        raise ValueError(f"predictions for volumes without ground truth: {extra}")
    ids = _class_ids(classes)
    per_volume = {
        case: volume_dice(predictions.get(case, {}), gt, ids)
        for case, gt in sorted(gt_volumes.items())
    }
    return summarize_dice(per_volume, classes)


def summarize_dice(
    per_volume: Mapping[str, Mapping[int, float]],
    classes: Sequence[int] | Mapping[int, Any],
) -> dict[str, Any]:
    """The means of per-volume, per-class Dice values (as ``summarize_volumes`` reports them).

    For callers that score one volume at a time with ``volume_dice`` (so only one volume is in
    memory) and summarise at the end.

    Args:
        per_volume: ``{case: {class_id: dice}}``; a class missing for a case counts as NaN.
        classes: the label values scored, or ``{value: name}``.

    Returns:
        The dict described in ``summarize_volumes``.
    """
    ids = _class_ids(classes)
    if isinstance(classes, Mapping):
        names = {int(c): str(name) for c, name in classes.items()}
    else:
        names = {c: str(c) for c in ids}
    per_volume = {
        case: {c: float(scores.get(c, float("nan"))) for c in ids}
        for case, scores in sorted(per_volume.items())
    }
    class_mean = {c: _mean(scores[c] for scores in per_volume.values()) for c in ids}
    return {
        "classes": names,
        "per_volume": per_volume,
        "volume_mean": {case: _mean(scores.values()) for case, scores in per_volume.items()},
        "class_mean": class_mean,
        "mean": _mean(class_mean.values()),
        "n_volumes": len(per_volume),
    }


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
