"""SAM 2 loss: terms against hand-computed values, best-of-multimask gradients, config."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samtune.training.loss import SAM2Loss
from tests.helpers import REPO


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def np_focal(logits: np.ndarray, target: np.ndarray, alpha: float = 0.25, gamma: float = 2.0):
    """Focal loss of one mask, mean over pixels, from the textbook formula."""
    p = np_sigmoid(logits)
    p_t = np.where(target, p, 1 - p)
    alpha_t = np.where(target, alpha, 1 - alpha)
    return float(np.mean(-alpha_t * (1 - p_t) ** gamma * np.log(p_t)))


def np_dice(logits: np.ndarray, target: np.ndarray) -> float:
    p = np_sigmoid(logits)
    return float(1 - (2 * np.sum(p * target) + 1) / (np.sum(p) + np.sum(target) + 1))


def np_iou(logits: np.ndarray, target: np.ndarray) -> float:
    pred = logits > 0
    union = np.sum(pred | target)
    return float(np.sum(pred & target) / max(union, 1))


def np_bce(logit: float, present: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(present * math.log(p) + (1 - present) * math.log(1 - p))


def test_terms_on_a_2x2_example_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])  # 1 x 1 x 2 x 2
    target = torch.tensor([[[True, True], [False, False]]])
    iou_pred = torch.tensor([[0.5]])
    score = torch.tensor([[0.3]])
    out = SAM2Loss()(logits, iou_pred, score, target)

    # Hand computation, pixel by pixel: p = sigmoid(logit), p_t = p if target else 1 - p.
    s = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.5, -3.0)]
    p_t = [s[0], s[1], 1 - s[2], 1 - s[3]]
    a_t = [0.25, 0.25, 0.75, 0.75]
    focal = sum(-a * (1 - q) ** 2 * math.log(q) for a, q in zip(a_t, p_t, strict=True)) / 4
    dice = 1 - (2 * (s[0] + s[1]) + 1) / (sum(s) + 2 + 1)
    # thresholded prediction {(0,0), (1,0)} vs target {(0,0), (0,1)}: IoU 1/3
    iou = abs(0.5 - 1 / 3)
    obj = math.log(1 + math.exp(-0.3))
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, rel=1e-5)
    assert out["iou"].item() == pytest.approx(iou, rel=1e-5)
    assert out["object_score"].item() == pytest.approx(obj, rel=1e-5)
    assert out["loss"].item() == pytest.approx(20 * focal + dice + iou + obj, rel=1e-5)


def _focal_reference(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float):
    """Per-mask focal loss from the textbook formula, in float64 (N x M x H x W -> N x M)."""
    x, t = logits.double(), target.double().expand_as(logits)
    log_p_t = torch.where(t > 0, F.logsigmoid(x), F.logsigmoid(-x))
    loss = -((1 - log_p_t.exp()) ** gamma) * log_p_t
    if alpha >= 0:
        loss = loss * torch.where(t > 0, alpha, 1 - alpha)
    return loss.flatten(2).mean(-1)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-0.5, 2.0), (0.9, 0.0)])
def test_focal_values_and_gradients_match_the_formula(alpha, gamma):
    # torchvision computes the focal term; samtune's "alpha < 0 turns the weighting off"
    # must survive the mapping to torchvision's -1, and gradients must flow the same way
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(4, 3, 9, 11, generator=g) * 4).requires_grad_(True)
    target = torch.rand(4, 9, 11, generator=g) > 0.6
    target[:, 0, 0] = True  # every object present
    loss_fn = SAM2Loss(focal_alpha=alpha, focal_gamma=gamma, supervise_object_score=False)
    out = loss_fn(logits, torch.zeros(4, 3), None, target)
    out["focal"].backward()

    ref_logits = logits.detach().clone().requires_grad_(True)
    focal_all = _focal_reference(ref_logits, target[:, None], alpha, gamma)
    p = torch.sigmoid(ref_logits.detach().double()).flatten(2)
    t = target[:, None].double().flatten(2)
    dice_all = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)
    best = (20 * focal_all.detach() + dice_all).argmin(dim=1)
    ref = focal_all[torch.arange(4), best].mean()
    ref.backward()
    assert out["focal"].item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(logits.grad, ref_logits.grad.float(), rtol=1e-4, atol=1e-8)
    assert (logits.grad.flatten(2).abs().sum(-1) > 0).sum() == 4  # one mask per object


def test_multimask_3x3_picks_best_mask_and_averages_over_objects():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 3, 3, 3, generator=g) * 2
    target = torch.zeros(3, 3, 3, dtype=torch.bool)
    target[0, :2, :2] = True
    target[1, 1:, :] = True  # object 2 stays empty: no mask loss, only the object score
    iou_pred = torch.rand(3, 3, generator=g)
    score = torch.tensor([[1.0], [-0.5], [0.7]])
    loss_fn = SAM2Loss()
    out = loss_fn(logits, iou_pred, score, target)

    lg, tg, ip = logits.numpy().astype(np.float64), target.numpy(), iou_pred.numpy()
    focal = dice = iou = 0.0
    for i in range(2):  # the present objects
        f = [np_focal(lg[i, j], tg[i]) for j in range(3)]
        d = [np_dice(lg[i, j], tg[i]) for j in range(3)]
        best = int(np.argmin([20 * a + b for a, b in zip(f, d, strict=True)]))
        focal += f[best]
        dice += d[best]
        iou += np.mean([abs(ip[i, j] - np_iou(lg[i, j], tg[i])) for j in range(3)])
    obj = np.mean([np_bce(1.0, 1), np_bce(-0.5, 1), np_bce(0.7, 0)])
    assert out["focal"].item() == pytest.approx(focal / 3, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice / 3, rel=1e-5)
    assert out["iou"].item() == pytest.approx(iou / 3, rel=1e-5)
    assert out["object_score"].item() == pytest.approx(obj, rel=1e-5)
    expected = 20 * focal / 3 + dice / 3 + iou / 3 + obj
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)


def test_gradients_reach_only_the_best_mask_for_focal_and_dice():
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    target[:, 1:3, 1:3] = True
    good = torch.where(target, 4.0, -4.0)
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 2] = good[0]  # object 0: best mask is 2
    logits[1, 0] = good[1]  # object 1: best mask is 0
    logits[0, :2] = -good[0]
    logits[1, 1:] = torch.randn(2, 4, 4) * 0.1
    logits.requires_grad_(True)
    iou_pred = torch.full((2, 3), 0.5, requires_grad=True)
    out = SAM2Loss(iou_weight=0.0, object_score_weight=0.0)(
        logits, iou_pred, torch.zeros(2, 1), target
    )
    out["loss"].backward()
    grad_norm = logits.grad.flatten(2).abs().sum(-1)
    assert grad_norm[0, 2] > 0 and grad_norm[1, 0] > 0
    assert grad_norm[0, 0] == 0 and grad_norm[0, 1] == 0
    assert grad_norm[1, 1] == 0 and grad_norm[1, 2] == 0
    assert iou_pred.grad.abs().sum() == 0

    # The IoU term reaches the IoU prediction of every mask.
    iou_pred.grad = None
    out = SAM2Loss(object_score_weight=0.0)(logits, iou_pred, torch.zeros(2, 1), target)
    out["loss"].backward()
    assert (iou_pred.grad != 0).all()


def test_perfect_logits_give_near_zero_focal_and_dice():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:6, 1:5] = True
    target[1, 4:, 4:] = True
    logits = torch.where(target, 20.0, -20.0)[:, None].repeat(1, 3, 1, 1)
    out = SAM2Loss()(logits, torch.ones(2, 3), torch.full((2, 1), 20.0), target)
    assert out["focal"].item() < 1e-7
    assert out["dice"].item() < 1e-6
    assert out["iou"].item() < 1e-6
    assert out["object_score"].item() < 1e-6
    assert out["loss"].item() < 1e-5


def test_iou_mse_option():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]]])
    target = torch.tensor([[[True, True], [False, False]]])
    out = SAM2Loss(iou_use_l1=False)(logits, torch.tensor([[0.9]]), torch.zeros(1, 1), target)
    assert out["iou"].item() == pytest.approx((0.9 - 1 / 3) ** 2, rel=1e-5)


def test_empty_targets_are_supervised_when_object_score_is_off():
    logits = torch.full((2, 1, 3, 3), 1.0)
    target = torch.zeros(2, 3, 3, dtype=torch.bool)
    target[0, 0, 0] = True
    on = SAM2Loss()(logits, torch.zeros(2, 1), torch.zeros(2, 1), target)
    off = SAM2Loss(supervise_object_score=False)(logits, torch.zeros(2, 1), None, target)
    f0 = np_focal(np.ones((3, 3)), target[0].numpy())
    f1 = np_focal(np.ones((3, 3)), target[1].numpy())
    assert on["focal"].item() == pytest.approx(f0 / 2, rel=1e-5)
    assert off["focal"].item() == pytest.approx((f0 + f1) / 2, rel=1e-5)
    assert off["object_score"].item() == 0.0


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((2, 3, 4, 4), (2, 3), (2, 1), (2, 5, 5)), "target"),
        (((2, 3, 4, 4), (2, 1), (2, 1), (2, 4, 4)), "iou_pred"),
        (((2, 3, 4, 4), (2, 3), (2,), (2, 4, 4)), "object_score_logits"),
        (((3, 4, 4), (2, 3), (2, 1), (2, 4, 4)), "mask_logits"),
        (((0, 3, 4, 4), (0, 3), (0, 1), (0, 4, 4)), "0 objects"),
    ],
)
def test_bad_shapes_are_rejected(shapes, match):
    logits, iou, score, target = shapes
    with pytest.raises(ValueError, match=match):
        SAM2Loss()(
            torch.zeros(logits), torch.zeros(iou), torch.zeros(score), torch.zeros(target).bool()
        )


def test_config_instantiates_with_every_argument():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "loss" / "default.yaml")
    loss = instantiate(cfg)
    assert isinstance(loss, SAM2Loss)
    params = set(inspect.signature(SAM2Loss.__init__).parameters) - {"self"}
    assert set(cfg.keys()) - {"_target_"} == params
    for name in params:
        assert getattr(loss, name) == cfg[name]
    assert (loss.focal_weight, loss.dice_weight, loss.iou_weight) == (20.0, 1.0, 1.0)
