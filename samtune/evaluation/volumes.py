"""Per-volume evaluation: stack per-slice predictions into 3D, and 3D Dice per class.

Dice of one class in one volume is ``2 |P & G| / (|P| + |G|)`` over all voxels. When the
class is absent from both the prediction and the ground truth the Dice is undefined: it is
reported as NaN and left out of every mean (a class the model rightly does not predict is
neither rewarded nor punished). A class absent from the ground truth but predicted scores 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from samtune.data.volumes.slicing import slice_view

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
    if isinstance(classes, Mapping):
        names = {int(c): str(name) for c, name in classes.items()}
    else:
        names = {c: str(c) for c in ids}
    per_volume = {
        case: volume_dice(predictions.get(case, {}), gt, ids)
        for case, gt in sorted(gt_volumes.items())
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
