"""SAM 2.1's decode output: choosing the best of several masks."""

from __future__ import annotations

import pytest
import torch

from samtune.segmenter.sam2 import Decoded


def test_best_picks_highest_predicted_iou():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    iou_pred = torch.tensor([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])
    best, best_iou = Decoded(logits, iou_pred, torch.zeros(2, 1)).best()
    assert best.shape == (2, 1, 2, 2)
    assert torch.equal(best[0, 0], logits[0, 1]) and torch.equal(best[1, 0], logits[1, 0])
    assert best_iou.tolist() == pytest.approx([0.9, 0.8])
    single, _ = Decoded(logits[:, :1], iou_pred[:, :1], torch.zeros(2, 1)).best()
    assert torch.equal(single, logits[:, :1])
    with pytest.raises(ValueError, match="Decoded.best"):
        Decoded(logits, iou_pred[:, :2], torch.zeros(2, 1)).best()
