"""Per-volume evaluation: stacking slice predictions and 3D Dice, against numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samtune.evaluation.volumes import (
    SlicePrediction,
    stack_slice_predictions,
    summarize_volumes,
    volume_dice,
)

SHAPE = (10, 9, 8)


def gt_volume() -> np.ndarray:
    """Class 1: a 4x4x4 cube; class 2: two separate 2x2x3 bars (two instances)."""
    gt = np.zeros(SHAPE, dtype=np.uint8)
    gt[1:5, 1:5, 2:6] = 1
    gt[7:9, 1:3, 1:4] = 2
    gt[7:9, 6:8, 4:7] = 2
    return gt


def reference_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return 2 * np.sum(pred & gt) / (pred.sum() + gt.sum())


def records_from(volume: np.ndarray, *, case: str, axis: int, shift: int = 0) -> list[dict]:
    """One record per class per slice where the class is present; masks shifted along rows."""
    records = []
    for k in range(volume.shape[axis]):
        plane = np.take(volume, k, axis=axis)
        for class_id in np.unique(plane[plane > 0]):
            mask = np.roll(plane == class_id, shift, axis=0)
            records.append(
                {"volume": case, "slice": k, "axis": axis, "class_id": int(class_id), "mask": mask}
            )
    return records


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_perfect_predictions_stack_back_and_score_one(axis):
    gt = gt_volume()
    stacked = stack_slice_predictions(
        records_from(gt, case="c1", axis=axis), {"c1": SHAPE, "c2": SHAPE}
    )
    assert set(stacked) == {"c1", "c2"} and stacked["c2"] == {}
    for class_id in (1, 2):
        np.testing.assert_array_equal(stacked["c1"][class_id], gt == class_id)
    assert volume_dice(stacked["c1"], gt, [1, 2]) == {1: 1.0, 2: 1.0}
    assert volume_dice(gt, gt, {1: "a", 2: "b"}) == {1: 1.0, 2: 1.0}  # label-volume prediction


def test_shifted_prediction_matches_hand_computed_and_numpy_dice():
    gt = gt_volume()
    records = [SlicePrediction(**r) for r in records_from(gt, case="c1", axis=2, shift=1)]
    stacked = stack_slice_predictions(records, {"c1": SHAPE})
    scores = volume_dice(stacked["c1"], gt, [1, 2])
    # class 1: cube of 64 voxels moved one row: 3 x 4 x 4 = 48 overlap -> 2 * 48 / 128 = 0.75
    assert scores[1] == pytest.approx(0.75)
    # class 2: each 2x2x3 bar moved one row keeps half: overlap 6 of 12 + 12 -> 0.5
    assert scores[2] == pytest.approx(0.5)
    for class_id in (1, 2):
        shifted = np.roll(gt == class_id, 1, axis=0)
        assert scores[class_id] == pytest.approx(reference_dice(shifted, gt == class_id))


def test_both_empty_is_nan_and_left_out_of_means():
    gt = gt_volume()
    gt_no_2 = np.where(gt == 2, 0, gt)
    pred_a = {1: gt == 1, 2: gt == 2}
    pred_b = {1: np.roll(gt_no_2 == 1, 1, axis=0)}
    scores = volume_dice(pred_b, gt_no_2, [1, 2, 3])
    assert scores[1] == pytest.approx(0.75) and math.isnan(scores[2]) and math.isnan(scores[3])
    summary = summarize_volumes(
        {"a": pred_a, "b": pred_b}, {"a": gt, "b": gt_no_2}, {1: "liver", 2: "spleen", 3: "gone"}
    )
    assert summary["classes"] == {1: "liver", 2: "spleen", 3: "gone"}
    assert summary["per_volume"]["a"][1] == 1.0 and math.isnan(summary["per_volume"]["b"][2])
    assert summary["class_mean"][1] == pytest.approx((1.0 + 0.75) / 2)
    assert summary["class_mean"][2] == pytest.approx(1.0)  # only volume a has class 2
    assert math.isnan(summary["class_mean"][3])
    assert summary["mean"] == pytest.approx((0.875 + 1.0) / 2)
    assert summary["volume_mean"] == {"a": 1.0, "b": pytest.approx(0.75)}
    assert summary["n_volumes"] == 2


def test_false_positive_in_absent_class_scores_zero_and_missing_volume_predicts_nothing():
    gt = gt_volume()
    pred = {1: gt == 1, 2: gt == 2, 4: gt == 2}
    assert volume_dice(pred, gt, [4]) == {4: 0.0}
    summary = summarize_volumes({}, {"a": gt}, [1])
    assert summary["per_volume"] == {"a": {1: 0.0}}
    with pytest.raises(ValueError, match="without ground truth"):
        summarize_volumes({"zz": pred}, {"a": gt}, [1])


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="'nope'"):
        stack_slice_predictions(
            [SlicePrediction("nope", 0, 2, 1, np.zeros((10, 9), bool))], {"c": SHAPE}
        )
    with pytest.raises(ValueError, match=r"mask is \(9, 10\), expected \(10, 9\)"):
        stack_slice_predictions(
            [SlicePrediction("c", 0, 2, 1, np.zeros((9, 10), bool))], {"c": SHAPE}
        )
    with pytest.raises(ValueError, match="out of range"):
        stack_slice_predictions(
            [SlicePrediction("c", 8, 2, 1, np.zeros((10, 9), bool))], {"c": SHAPE}
        )
    with pytest.raises(ValueError, match="lacks"):
        stack_slice_predictions([{"volume": "c", "slice": 0}], {"c": SHAPE})
    with pytest.raises(ValueError, match="predicted volume is"):
        volume_dice({1: np.zeros((2, 2, 2), bool)}, gt_volume(), [1])
