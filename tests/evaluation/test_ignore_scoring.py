"""Pixels a dataset marks "not labelled" are scored in neither the prediction nor the truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data.sample import Sample
from samtune.evaluation import Evaluator, error_center_clicks
from samtune.evaluation.batching import ObjectBatch
from samtune.evaluation.protocols import PROTOCOL_VERSIONS, object_ious
from samtune.metrics import mask_dice, mask_iou
from samtune.models import build_sam2_model
from tests.helpers import make_blob_sample


def _square_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gt = torch.zeros(1, 32, 32, dtype=torch.bool)
    gt[0, 8:20, 8:20] = True
    ignore = torch.zeros(32, 32, dtype=torch.bool)
    ignore[:, 26:] = True  # a border band the dataset did not label
    pred = gt.clone()
    pred[0, 4:30, 26:] = True  # differs from the truth only inside the ignored band
    return pred, gt, ignore


def test_a_prediction_differing_only_in_ignored_pixels_scores_one():
    pred, gt, ignore = _square_case()
    assert mask_iou(pred, gt, ignore).item() == 1.0
    assert mask_dice(pred, gt, ignore).item() == 1.0
    # without the ignore mask the same prediction has 26 * 6 false positives
    fp = 26 * 6
    assert mask_iou(pred, gt).item() == pytest.approx(144 / (144 + fp))
    assert mask_dice(pred, gt).item() == pytest.approx(2 * 144 / (2 * 144 + fp))
    # one mask per object works too, and a wrongly sized ignore mask is refused
    assert mask_iou(pred, gt, ignore[None]).item() == 1.0
    with pytest.raises(ValueError, match="ignore must be H x W"):
        mask_iou(pred, gt, ignore[:10])


def test_errors_outside_the_ignored_pixels_still_count():
    pred, gt, ignore = _square_case()
    pred[0, 8:20, 8:10] = False  # 24 pixels missed where the truth is labelled
    assert mask_iou(pred, gt, ignore).item() == pytest.approx(120 / 144)


def test_validation_ious_and_correction_clicks_leave_ignored_pixels_out():
    pred, gt, ignore = _square_case()
    image = np.zeros((32, 32, 3), np.uint8)
    sample = Sample(image=image, masks=gt.numpy(), meta={"file": "a.png"}, ignore=ignore.numpy())
    plain = Sample(image=image, masks=gt.numpy(), meta={"file": "b.png"})
    batch = ObjectBatch.from_samples([(sample, np.array([0])), (plain, np.array([0]))], "cpu")
    # validation's per-object IoUs (object_ious): ignored pixels are no false positives
    ious = object_ious(batch, [pred, pred])
    assert ious[0].item() == 1.0 and ious[1].item() < 1.0
    # the correction click goes to the error outside the ignore mask, not into the band
    pred[0, 12:16, 12:16] = False  # a hole inside the object
    points, labels = error_center_clicks(pred, gt, ignore)
    x, y = points[0, 0].tolist()
    assert labels[0, 0].item() == 1 and 12 <= x < 16 and 12 <= y < 16
    points, labels = error_center_clicks(pred, gt)  # without it the band is the larger error
    assert labels[0, 0].item() == 0 and points[0, 0, 0].item() >= 26


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return build_sam2_model("sam2.1_hiera_tiny", image_size=128, checkpoint=tiny_checkpoint)


def test_the_evaluator_scores_without_the_ignored_pixels_and_counts_them(model):
    sample = make_blob_sample((96, 120), n=1, seed=3)
    evaluator = Evaluator(protocols=("point1", "box"), progress=False, keep_masks=True)
    plain = evaluator.evaluate(model, [sample])
    assert plain.counts()["ignored_pixels"] == 0
    # ignore every pixel the point1 prediction put outside the object: same prompts, same
    # masks, and the IoU becomes the share of the object that was found
    row = plain.protocol_rows("point1")[0]
    gt = sample.masks[0]
    ignore = row.mask & ~gt
    ignore[:4] = True  # and a labelled-nowhere strip, so the mask is never empty
    masked = Sample(
        image=sample.image, masks=sample.masks, meta=dict(sample.meta), ignore=ignore.copy()
    )
    result = evaluator.evaluate(model, [masked])
    again = result.protocol_rows("point1")[0]
    assert np.array_equal(again.mask, row.mask)
    found = np.count_nonzero(row.mask & gt)
    assert again.iou == pytest.approx(found / np.count_nonzero(gt))
    expected = mask_iou(torch.from_numpy(row.mask), torch.from_numpy(gt)).item()
    assert row.iou == pytest.approx(expected)
    # this random-init model finds part of the object and spills far outside it
    assert found > 0 and np.count_nonzero(row.mask & ~gt) > 0
    assert again.iou > row.iou
    kept = masked.ignore  # the Sample cuts object pixels out of its ignore mask
    assert not (kept & gt).any()
    box = result.protocol_rows("box")[0]
    assert box.iou == pytest.approx(
        mask_iou(torch.from_numpy(box.mask), torch.from_numpy(gt), torch.from_numpy(kept)).item()
    )
    counts = result.counts()
    assert counts["ignored_pixels"] == int(np.count_nonzero(kept)) > 0
    assert counts["images_with_ignore"] == 1
    assert counts["ignored_fraction"] == pytest.approx(
        np.count_nonzero(kept) / (96 * 120), abs=1e-6
    )


def test_the_protocols_are_at_the_version_that_leaves_ignored_pixels_out():
    assert PROTOCOL_VERSIONS == {"point1": 2, "box": 2, "clicks": 2}
