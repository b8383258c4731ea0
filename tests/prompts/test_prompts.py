"""Prompt simulation: SAM 2's recipe, bounds, error regions, determinism, config."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from samtune.prompts import Prompts, PromptSimulator, mask_to_box
from tests.helpers import REPO, make_blob_sample


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rect_masks(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random axis-aligned rectangles of varied sizes, some touching the frame border."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        y0, x0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
        y1, x1 = rng.integers(y0, h), rng.integers(x0, w)
        masks[i, y0 : y1 + 1, x0 : x1 + 1] = True
    return torch.from_numpy(masks)


def disk(h: int, w: int, cy: float, cx: float, r: float) -> torch.Tensor:
    yy, xx = np.mgrid[:h, :w]
    return torch.from_numpy((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2)


def at(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Values of ``masks[i]`` at the single click ``coords[i, 0] = (x, y)``."""
    x = coords[:, 0, 0].long()
    y = coords[:, 0, 1].long()
    return masks[torch.arange(masks.shape[0]), y, x]


# --- boxes --------------------------------------------------------------------------------


def test_mask_to_box_matches_numpy_and_sam2():
    from sam2.utils.misc import mask_to_box as sam2_mask_to_box

    masks = rect_masks(12, 20, 30) | rect_masks(12, 20, 30, seed=1)
    boxes = mask_to_box(masks)
    for i, m in enumerate(masks.numpy()):
        ys, xs = np.nonzero(m)
        assert boxes[i].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert torch.equal(boxes, sam2_mask_to_box(masks[:, None])[:, 0].float())


def test_zero_noise_gives_tight_box():
    masks = rect_masks(10, 40, 50)
    sim = PromptSimulator(box_prob=1.0, box_noise=0.0)
    prompts = sim.initial(masks, generator=gen())
    assert prompts.point_coords is None and prompts.point_labels is None
    assert prompts.multimask is False
    for i, m in enumerate(masks.numpy()):
        ys, xs = np.nonzero(m)
        assert prompts.boxes[i].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]


@pytest.mark.parametrize(("noise", "max_px"), [(0.1, 20.0), (0.5, 2.5)])
def test_box_jitter_within_bounds(noise, max_px):
    h, w = 240, 320  # boxes up to 320 px wide: 0.1 x side exceeds 20 px for some
    masks = rect_masks(300, h, w, seed=3)
    tight = mask_to_box(masks)
    sim = PromptSimulator(box_prob=1.0, box_noise=noise, box_noise_max_px=max_px)
    boxes = sim.initial(masks, generator=gen(5)).boxes
    side = torch.stack(
        [tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1]] * 2, dim=1
    )  # width for x, height for y
    bound = torch.clamp(side * noise, max=max_px)
    offset = boxes - tight
    assert (offset.abs() <= bound + 1e-5).all()
    assert (boxes >= 0).all()
    assert (boxes[:, [0, 2]] <= w - 1).all() and (boxes[:, [1, 3]] <= h - 1).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
    # It really jitters, in both directions, up to close to the bound (away from the border).
    unclamped = (tight[:, 0] >= bound[:, 0]) & (tight[:, 0] + bound[:, 0] <= w - 1)
    inner = unclamped & (bound[:, 0] > 1)
    rel = offset[inner, 0] / bound[inner, 0]
    assert rel.numel() > 20
    assert rel.min() < -0.8 and rel.max() > 0.8
    assert (bound[:, 0] == max_px).any()  # the pixel cap binds for some boxes


def test_box_clamped_to_frame_for_objects_on_the_border():
    h, w = 30, 40
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, :10, :12] = True  # top-left corner
    masks[1, 20:, 25:] = True  # bottom-right corner
    sim = PromptSimulator(box_prob=1.0, box_noise=0.5, box_noise_max_px=20.0)
    for seed in range(20):
        boxes = sim.initial(masks, generator=gen(seed)).boxes
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= w - 1).all() and (boxes[:, [1, 3]] <= h - 1).all()


# --- first click --------------------------------------------------------------------------


def test_clicks_lie_inside_the_object():
    sample = make_blob_sample(size=(70, 90), n=5, seed=4)
    masks = torch.from_numpy(sample.masks)
    sim = PromptSimulator(box_prob=0.0)
    for seed in range(10):
        prompts = sim.initial(masks, generator=gen(seed))
        assert prompts.boxes is None
        assert (
            prompts.point_coords.shape == (5, 1, 2) and prompts.point_coords.dtype == torch.float32
        )
        assert prompts.point_labels.shape == (5, 1) and prompts.point_labels.dtype == torch.int32
        assert (prompts.point_labels == 1).all()
        assert at(masks, prompts.point_coords).all()
        assert prompts.multimask is True
    assert (
        PromptSimulator(box_prob=0.0, multimask_single_click=False)
        .initial(masks, generator=gen())
        .multimask
        is False
    )


def test_click_is_uniform_over_the_object():
    mask = torch.zeros(5, 6, dtype=torch.bool)
    pixels = [(1, 1), (1, 4), (3, 2), (4, 5)]  # (y, x)
    for y, x in pixels:
        mask[y, x] = True
    n = 4000
    prompts = PromptSimulator(box_prob=0.0).initial(mask.expand(n, 5, 6).clone(), generator=gen(2))
    xy = prompts.point_coords[:, 0].long()
    for y, x in pixels:
        freq = ((xy[:, 0] == x) & (xy[:, 1] == y)).float().mean().item()
        assert abs(freq - 0.25) < 0.03


def test_box_prob_extremes_and_middle():
    masks = rect_masks(3, 20, 20)
    never = PromptSimulator(box_prob=0.0)
    always = PromptSimulator(box_prob=1.0)
    for seed in range(30):
        assert never.initial(masks, generator=gen(seed)).boxes is None
        assert always.initial(masks, generator=gen(seed)).point_coords is None
    half = PromptSimulator(box_prob=0.5)
    boxes = [half.initial(masks, generator=gen(s)).boxes is not None for s in range(200)]
    assert 0.35 < np.mean(boxes) < 0.65


def test_one_draw_decides_box_or_click_for_all_objects():
    masks = rect_masks(8, 20, 20)
    sim = PromptSimulator(box_prob=0.5)
    for seed in range(10):
        p = sim.initial(masks, generator=gen(seed))
        assert (p.boxes is None) != (p.point_coords is None)
        shape = p.boxes.shape if p.boxes is not None else p.point_coords.shape[:1]
        assert shape[0] == 8


# --- correction clicks --------------------------------------------------------------------


def test_correction_false_negative_only_gives_positive_clicks_in_the_miss():
    gt = disk(32, 32, 16, 16, 10).expand(6, 32, 32).clone()
    pred = gt.clone()
    pred[:, :, 16:] = False  # the right half is missed
    sim = PromptSimulator(click_from_gt_prob=0.0)
    coords, labels = sim.correction(pred, gt, generator=gen())
    assert coords.shape == (6, 1, 2) and coords.dtype == torch.float32
    assert labels.shape == (6, 1) and labels.dtype == torch.int32
    assert (labels == 1).all()
    assert at(gt & ~pred, coords).all()


def test_correction_false_positive_only_gives_negative_clicks_in_the_excess():
    gt = disk(32, 32, 16, 16, 6).expand(6, 32, 32).clone()
    pred = disk(32, 32, 16, 16, 12).expand(6, 32, 32).clone()
    sim = PromptSimulator(click_from_gt_prob=0.0)
    coords, labels = sim.correction(pred, gt, generator=gen(1))
    assert (labels == 0).all()
    assert at(pred & ~gt, coords).all()


def test_correction_mixed_errors_label_follows_the_region():
    gt = rect_masks(200, 24, 24, seed=7)
    pred = rect_masks(200, 24, 24, seed=8)
    sim = PromptSimulator(click_from_gt_prob=0.0)
    coords, labels = sim.correction(pred, gt, generator=gen(3))
    has_error = (pred ^ gt).flatten(1).any(1)
    assert has_error.all()
    assert at(pred ^ gt, coords).all()
    assert torch.equal(labels[:, 0], at(gt, coords).int())
    assert (labels == 1).any() and (labels == 0).any()


def test_correction_perfect_prediction():
    gt = disk(20, 20, 10, 10, 5).expand(4, 20, 20).clone()
    sim = PromptSimulator(click_from_gt_prob=0.0)
    coords, labels = sim.correction(gt.clone(), gt, generator=gen())
    assert (labels == 0).all()
    assert (~at(gt, coords)).all()  # from the background
    full = torch.ones(3, 8, 8, dtype=torch.bool)  # object fills the frame: nothing else to click
    coords, labels = sim.correction(full.clone(), full, generator=gen())
    assert (labels == 1).all()


def test_click_from_gt_prob_one_clicks_inside_gt():
    gt = disk(32, 32, 16, 16, 6).expand(50, 32, 32).clone()
    pred = disk(32, 32, 16, 16, 12).expand(50, 32, 32).clone()  # only false positives
    sim = PromptSimulator(click_from_gt_prob=1.0)
    coords, labels = sim.correction(pred, gt, generator=gen(4))
    assert (labels == 1).all()
    assert at(gt, coords).all()


def test_click_from_gt_prob_is_per_object():
    gt = disk(32, 32, 16, 16, 6).expand(400, 32, 32).clone()
    pred = disk(32, 32, 16, 16, 12).expand(400, 32, 32).clone()  # errors are all negative
    coords, labels = PromptSimulator(click_from_gt_prob=0.3).correction(pred, gt, generator=gen(5))
    frac = labels.float().mean().item()  # positive only when drawn from gt
    assert 0.2 < frac < 0.4


def test_correction_follows_sam2_uniform_error_sampling():
    """Same distribution over (pixel, label) as sam2's ``sample_random_points_from_errors``."""
    from sam2.modeling.sam2_utils import sample_random_points_from_errors

    gt = torch.zeros(4, 5, dtype=torch.bool)
    gt[1:3, 1:4] = True
    pred = gt.clone()
    pred[1, 1] = pred[2, 3] = False  # two misses
    pred[0, 0] = pred[3, 4] = pred[0, 4] = True  # three false alarms
    n = 5000
    gts, preds = gt.expand(n, 4, 5).clone(), pred.expand(n, 4, 5).clone()
    ours_xy, ours_lab = PromptSimulator(click_from_gt_prob=0.0).correction(
        preds, gts, generator=gen(6)
    )
    torch.manual_seed(0)
    ref_xy, ref_lab = sample_random_points_from_errors(gts[:, None], preds[:, None])
    ours_idx = (ours_xy[:, 0, 1] * 5 + ours_xy[:, 0, 0]).long()
    ref_idx = (ref_xy[:, 0, 1] * 5 + ref_xy[:, 0, 0]).long()
    ours_hist = torch.bincount(ours_idx, minlength=20).float() / n
    ref_hist = torch.bincount(ref_idx, minlength=20).float() / n
    assert set(ours_idx.tolist()) == set(ref_idx.tolist())
    assert torch.allclose(ours_hist, ref_hist, atol=0.04)
    flat_gt = gt.flatten()
    assert torch.equal(ours_lab[:, 0], flat_gt[ours_idx].int())
    assert torch.equal(ref_lab[:, 0], flat_gt[ref_idx].int())


def test_correction_rejects_bad_input():
    sim = PromptSimulator()
    gt = torch.ones(2, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        sim.correction(torch.ones(2, 8, 9, dtype=torch.bool), gt, generator=gen())
    with pytest.raises(ValueError, match="torch.bool"):
        sim.correction(torch.ones(2, 8, 8), gt, generator=gen())


# --- determinism, object selection, input checks ------------------------------------------


def test_same_seed_same_prompts_other_seed_different():
    masks = torch.from_numpy(make_blob_sample(size=(64, 64), n=6, seed=1).masks)
    pred = masks.roll(3, dims=2)
    for box_prob in (0.0, 1.0):
        sim = PromptSimulator(box_prob=box_prob)
        a, b, c = (sim.initial(masks, generator=gen(s)) for s in (11, 11, 12))
        key = "boxes" if box_prob else "point_coords"
        assert torch.equal(getattr(a, key), getattr(b, key))
        assert not torch.equal(getattr(a, key), getattr(c, key))
    sim = PromptSimulator()
    a, b, c = (sim.correction(pred, masks, generator=gen(s)) for s in (3, 3, 4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_select_objects_respects_the_cap():
    sim = PromptSimulator(max_objects_per_image=16)
    idx = sim.select_objects(40, generator=gen())
    assert idx.dtype == torch.long and idx.numel() == 16
    assert idx.unique().numel() == 16 and idx.min() >= 0 and idx.max() < 40
    assert torch.equal(idx, idx.sort().values)
    assert torch.equal(idx, sim.select_objects(40, generator=gen()))
    assert not torch.equal(idx, sim.select_objects(40, generator=gen(1)))
    assert torch.equal(sim.select_objects(5, generator=gen()), torch.arange(5))
    assert sim.select_objects(0, generator=gen()).numel() == 0
    uncapped = PromptSimulator(max_objects_per_image=None)
    assert torch.equal(uncapped.select_objects(40, generator=gen()), torch.arange(40))


def test_empty_mask_is_rejected():
    masks = rect_masks(3, 10, 10)
    masks[1] = False
    with pytest.raises(ValueError, match=r"\[1\]"):
        PromptSimulator().initial(masks, generator=gen())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"box_prob": 1.5},
        {"click_from_gt_prob": -0.1},
        {"box_noise": -1.0},
        {"box_noise_max_px": -2.0},
        {"correction_clicks": -1},
        {"max_objects_per_image": 0},
    ],
)
def test_invalid_settings_are_rejected(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        PromptSimulator(**kwargs)


def test_add_points_appends_clicks_and_turns_multimask_off():
    p = Prompts(torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.int32), None, multimask=True)
    q = p.add_points(torch.ones(2, 1, 2), torch.zeros(2, 1, dtype=torch.int32))
    assert q.point_coords.shape == (2, 2, 2) and q.point_labels.tolist() == [[1, 0], [1, 0]]
    assert q.multimask is False
    box = Prompts(None, None, torch.zeros(2, 4), multimask=False)
    r = box.add_points(torch.ones(2, 1, 2), torch.ones(2, 1, dtype=torch.int32))
    assert r.point_coords.shape == (2, 1, 2) and r.boxes is box.boxes


def test_config_instantiates_with_every_argument():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "prompts" / "default.yaml")
    sim = instantiate(cfg)
    assert isinstance(sim, PromptSimulator)
    params = set(inspect.signature(PromptSimulator.__init__).parameters) - {"self"}
    assert set(cfg.keys()) - {"_target_"} == params
    for name in params:
        assert getattr(sim, name) == cfg[name]
    # The defaults are SAM 2's recipe.
    assert (sim.box_prob, sim.box_noise, sim.box_noise_max_px, sim.correction_clicks) == (
        0.5,
        0.1,
        20.0,
        7,
    )
