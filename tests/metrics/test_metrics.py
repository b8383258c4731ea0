"""Metrics against hand-computed values, numpy and pycocotools."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from samtune.metrics import (
    IoUPerClick,
    MeanDice,
    MeanIoU,
    NoC,
    mask_dice,
    mask_iou,
    number_of_clicks,
)


def _random_masks(n: int = 6, h: int = 23, w: int = 31, seed: int = 0):
    rng = np.random.default_rng(seed)
    pred = rng.random((n, h, w)) < rng.uniform(0.05, 0.6, size=(n, 1, 1))
    gt = rng.random((n, h, w)) < rng.uniform(0.05, 0.6, size=(n, 1, 1))
    return pred, gt


def test_hand_made_iou_and_dice():
    pred = torch.zeros(4, 8, 8, dtype=torch.bool)
    gt = torch.zeros(4, 8, 8, dtype=torch.bool)
    pred[0, 0:4, 0:4] = True  # 16 px
    gt[0, 2:6, 0:4] = True  # 16 px, 8 shared -> IoU 8/24, Dice 16/32
    pred[1, :2, :] = True  # 16 px vs identical gt
    gt[1, :2, :] = True
    gt[2, 3, 3] = True  # prediction empty, gt not -> 0
    # object 3: both empty -> 1 by convention
    np.testing.assert_allclose(mask_iou(pred, gt).numpy(), [1 / 3, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(mask_dice(pred, gt).numpy(), [0.5, 1.0, 0.0, 1.0])


def test_single_mask_without_batch_dim():
    a = torch.zeros(5, 5, dtype=torch.bool)
    b = torch.zeros(5, 5, dtype=torch.bool)
    a[0, :] = True
    b[:, 0] = True  # 1 shared of 9
    assert mask_iou(a, b).tolist() == pytest.approx([1 / 9])
    assert mask_dice(a, b).tolist() == pytest.approx([2 / 10])


def test_iou_matches_pycocotools_and_numpy():
    pred, gt = _random_masks()
    ours = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    rle_p = mask_utils.encode(np.asfortranarray(pred.transpose(1, 2, 0).astype(np.uint8)))
    rle_g = mask_utils.encode(np.asfortranarray(gt.transpose(1, 2, 0).astype(np.uint8)))
    coco = np.diag(mask_utils.iou(rle_p, rle_g, [0] * len(rle_g)))
    inter = (pred & gt).sum(axis=(1, 2))
    union = (pred | gt).sum(axis=(1, 2))
    np.testing.assert_allclose(ours, coco, rtol=1e-12)
    np.testing.assert_allclose(ours, inter / union, rtol=1e-12)


def test_dice_matches_numpy():
    pred, gt = _random_masks(seed=1)
    ours = mask_dice(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    ref = 2 * (pred & gt).sum(axis=(1, 2)) / (pred.sum(axis=(1, 2)) + gt.sum(axis=(1, 2)))
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    iou = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt)).numpy()
    np.testing.assert_allclose(ours, 2 * iou / (1 + iou), rtol=1e-12)  # Dice = 2 IoU / (1 + IoU)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        mask_iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


def test_number_of_clicks_conventions():
    ious = torch.tensor(
        [
            [0.95, 0.96, 0.97, 0.99],  # perfect from the first click -> 1
            [0.10, 0.20, 0.30, 0.40],  # never -> K = 4
            [0.50, 0.86, 0.80, 0.95],  # 0.85 at click 2, 0.90 at click 4
            [0.85, 0.10, 0.10, 0.10],  # exactly the threshold counts
            [0.00, 0.00, 0.00, 0.90],  # reached at the last click -> K as well
        ],
        dtype=torch.float64,
    )
    assert number_of_clicks(ious, 0.85).tolist() == [1, 4, 2, 1, 4]
    assert number_of_clicks(ious, 0.90).tolist() == [1, 4, 4, 4, 4]
    with pytest.raises(ValueError):
        number_of_clicks(ious[:, :0], 0.85)


def test_metric_classes_accumulate_to_the_functional_mean():
    pred, gt = _random_masks(n=9, seed=2)
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)
    miou, mdice = MeanIoU(), MeanDice()
    for chunk in (slice(0, 2), slice(2, 7), slice(7, 9)):
        miou.update(pred_t[chunk], gt_t[chunk])
        mdice.update(pred_t[chunk], gt_t[chunk])
    assert miou.compute().item() == pytest.approx(mask_iou(pred_t, gt_t).mean().item(), abs=1e-12)
    assert mdice.compute().item() == pytest.approx(mask_dice(pred_t, gt_t).mean().item(), abs=1e-12)
    miou.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(miou.compute())


def test_click_metrics_accumulate_and_merge_like_ddp():
    rng = np.random.default_rng(3)
    ious = torch.from_numpy(np.sort(rng.random((10, 5)), axis=1))
    noc, curve = NoC(0.85, max_clicks=5), IoUPerClick(max_clicks=5)
    noc.update(ious[:4])
    noc.update(ious[4:])
    curve.update(ious[:4])
    curve.update(ious[4:])
    expected = number_of_clicks(ious, 0.85).double().mean().item()
    assert noc.compute().item() == pytest.approx(expected, abs=1e-12)
    assert noc.failures.item() == int((ious.max(dim=1).values < 0.85).sum())
    np.testing.assert_allclose(curve.compute().numpy(), ious.mean(dim=0).numpy(), rtol=1e-12)
    # two "processes" merged through the sum reductions equal one process that saw everything
    a, b = NoC(0.85, max_clicks=5), NoC(0.85, max_clicks=5)
    a.update(ious[:3])
    b.update(ious[3:])
    a.merge_state(b)
    assert a.compute().item() == pytest.approx(expected, abs=1e-12)
    for metric in (noc, curve, MeanIoU(), MeanDice()):
        assert set(metric._reductions) >= {"total", "count"}
        assert all(fn.__name__ == "dim_zero_sum" for fn in metric._reductions.values())


def test_noc_uses_only_the_click_budget():
    ious = torch.tensor([[0.1, 0.2, 0.95]], dtype=torch.float64)
    noc = NoC(0.9, max_clicks=2)  # the 3rd click is beyond the budget
    noc.update(ious)
    assert noc.compute().item() == 2.0
    with pytest.raises(ValueError, match="max_clicks"):
        NoC(0.9, max_clicks=5).update(ious)
