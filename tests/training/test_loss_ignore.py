import torch

from samtune.training.loss import SAM2Loss


def test_prediction_differing_only_in_ignore_region_has_perfect_loss():
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, 8:16, 8:16] = True
    ignore = torch.zeros_like(target)
    ignore[0, 20:30, 20:30] = True
    perfect = torch.where(target, 10.0, -10.0)[:, None]
    wrong_in_ignore = perfect.clone()
    wrong_in_ignore[0, 0, 20:30, 20:30] = 10.0
    iou = torch.ones(1, 1)
    score = torch.full((1, 1), 10.0)
    loss = SAM2Loss()
    a = loss(perfect, iou, score, target, ignore=ignore)
    b = loss(wrong_in_ignore, iou, score, target, ignore=ignore)
    c = loss(wrong_in_ignore, iou, score, target)
    assert torch.allclose(a["loss"], b["loss"])
    assert c["loss"] > b["loss"] + 1e-3
