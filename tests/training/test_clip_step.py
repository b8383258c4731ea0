"""samtune's clip step against the installed ``training.model.sam2.SAM2Train`` forward and
``training.loss_fns.MultiStepMultiMasksAndIous``: same clip, weights, plan and clicks."""

from __future__ import annotations

import importlib
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from samtune.models.build import POSTPROCESSING_OVERRIDES, sam2_config_path
from samtune.models.registry import get_model_info
from samtune.training.clip_step import (
    ClipPlan,
    VideoRecipe,
    backbone_features,
    checkpoint_memory_attention,
    clip_loss,
    error_click,
    flat_frames,
    sample_plan,
    track_clip,
)
from samtune.training.loss import SAM2Loss
from tests.helpers import SMALL_SIZE

T, S = 4, SMALL_SIZE


def official_training_modules(monkeypatch):
    """``training.model.sam2`` and ``training.loss_fns`` with the two imports they need only
    for names (``tensordict``'s batch class and the trainer's loss key) stubbed."""
    data_utils = types.ModuleType("training.utils.data_utils")
    data_utils.BatchedVideoDatapoint = object
    trainer = types.ModuleType("training.trainer")
    trainer.CORE_LOSS_KEY = "core_loss"
    for name in ("training.utils.data_utils", "training.trainer"):
        if name not in sys.modules:
            monkeypatch.setitem(sys.modules, name, data_utils if "data" in name else trainer)
    return importlib.import_module("training.model.sam2"), importlib.import_module(
        "training.loss_fns"
    )


def build(target: str, **extra):
    from hydra.utils import instantiate

    cfg = OmegaConf.load(sam2_config_path(get_model_info("sam2.1_hiera_tiny").sam2_config))
    cfg.model.image_size = S
    cfg.model.sam_mask_decoder_extra_args = {
        **(cfg.model.get("sam_mask_decoder_extra_args") or {}),
        **POSTPROCESSING_OVERRIDES,
    }
    cfg.model._target_ = target
    for k, v in extra.items():
        cfg.model[k] = v
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def moving_clip(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip (1 x T x 3 x S x S) of two moving squares; object 1 leaves after frame 1."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(1, T, 3, S, S, generator=g) * 0.3
    masks = torch.zeros(2, T, S, S, dtype=torch.bool)
    for t in range(T):
        masks[0, t, 20 + 6 * t : 60 + 6 * t, 30 : 70 + 4 * t] = True
        if t < 2:
            masks[1, t, 80:110, 70 + 5 * t : 100 + 5 * t] = True
    frames[0] += masks.any(0)[:, None].float()
    return frames, masks


def clicker(gt: torch.Tensor, pred: torch.Tensor | None):
    """Clicks that depend only on the masks (equal predictions give equal clicks)."""
    key = int(gt.sum()) + 7 * (0 if pred is None else int(pred.sum()))
    return error_click(gt, pred, torch.Generator().manual_seed(key))


@pytest.mark.parametrize(
    "case, rng_seed",
    [("points", 0), ("points", 5), ("box", 1), ("masks", 2)],
)
def test_clip_step_equals_sam2train(monkeypatch, tiny_state_dict, case, rng_seed):
    sam2_train, loss_fns = official_training_modules(monkeypatch)
    monkeypatch.setattr(
        sam2_train,
        "get_next_point",
        lambda gt_masks, pred_masks, method: clicker(gt_masks, pred_masks),
    )
    monkeypatch.setattr(
        sam2_train,
        "sample_box_points",
        _box,
    )
    recipe = VideoRecipe(correction_clicks=2, click_from_gt_prob=0.0)
    official = build(
        "training.model.sam2.SAM2Train",
        prob_to_use_pt_input_for_train=0.0 if case == "masks" else 1.0,
        prob_to_use_box_input_for_train=1.0 if case == "box" else 0.0,
        num_frames_to_correct_for_train=2,
        rand_frames_to_correct_for_train=True,
        num_init_cond_frames_for_train=2,
        rand_init_cond_frames_for_train=True,
        add_all_frames_to_correct_as_cond=True,
        num_correction_pt_per_frame=recipe.correction_clicks,
        prob_to_sample_from_gt_for_train=0.0,
    )
    official.load_state_dict(tiny_state_dict, strict=True)
    official.rng = np.random.default_rng(rng_seed)
    official.train()
    ours = build("sam2.modeling.sam2_base.SAM2Base")
    ours.load_state_dict(tiny_state_dict, strict=True)
    ours.train()
    assert checkpoint_memory_attention(ours)

    frames, masks = moving_clip(rng_seed)
    captured = {}
    prepare = official.prepare_prompt_inputs

    def capture(backbone_out, inp, start_frame_idx=0):
        captured.update(prepare(backbone_out, inp, start_frame_idx))
        return captured

    monkeypatch.setattr(official, "prepare_prompt_inputs", capture)
    images = flat_frames(frames)
    obj_video = torch.zeros(2, dtype=torch.long)
    batch = SimpleNamespace(
        flat_img_batch=images,
        masks=masks.transpose(0, 1),  # T x O x H x W
        num_frames=T,
        flat_obj_to_img_idx=[t * 1 + obj_video for t in range(T)],
    )
    torch.manual_seed(11)  # dropout draws, in the same order on both sides
    want = official(batch)
    loss_official = loss_fns.MultiStepMultiMasksAndIous(
        weight_dict={"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0},
        supervise_all_iou=True,
        iou_use_l1_loss=True,
        pred_obj_scores=True,
        focal_gamma_obj_score=0.0,
        focal_alpha_obj_score=-1.0,
    )(want, masks.transpose(0, 1).float())

    plan = ClipPlan(
        use_points=bool(captured["use_pt_input"]),
        init_cond_frames=list(captured["init_cond_frames"]),
        correct_frames=list(captured["frames_to_add_correction_pt"]),
        point_inputs=dict(captured["point_inputs_per_frame"]),
        mask_inputs=dict(captured["mask_inputs_per_frame"]),
    )
    assert plan.use_points == (case != "masks")
    if rng_seed == 5:  # a corrected frame that becomes a conditioning frame
        assert set(plan.correct_frames) - set(plan.init_cond_frames)
    gt = [masks[:, t, None] for t in range(T)]
    torch.manual_seed(11)
    feats = backbone_features(ours, ours.forward_image(images))
    got = track_clip(ours, feats, gt, obj_video, 1, plan, recipe, clicker)
    loss_ours = clip_loss(got, gt, SAM2Loss())

    steps = 0
    for t in range(T):
        a, b = want[t], got[t]
        assert len(a["multistep_pred_ious"]) == len(b["multistep_pred_ious"])
        steps += len(a["multistep_pred_ious"])
        for key in ("multistep_pred_multimasks_high_res", "multistep_pred_ious"):
            for x, y in zip(a[key], b[key]):
                torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)
        for x, y in zip(a["multistep_object_score_logits"], b["multistep_object_score_logits"]):
            torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            b["pred_masks_high_res"], a["pred_masks_high_res"], atol=1e-4, rtol=1e-4
        )
    if case != "masks":
        assert steps == T + recipe.correction_clicks * len(plan.correct_frames)
    torch.testing.assert_close(loss_ours["loss"], loss_official["core_loss"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(loss_ours["focal"], loss_official["loss_mask"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        loss_ours["object_score"], loss_official["loss_class"], atol=1e-5, rtol=1e-5
    )

    # the gradients reaching the memory path agree too (ours with a checkpointed memory attention)
    loss_official["core_loss"].backward()
    loss_ours["loss"].backward()
    named = dict(official.named_parameters())
    for name, p in ours.named_parameters():
        if name.startswith(("memory_attention", "memory_encoder", "obj_ptr_proj")):
            q = named[name]
            assert (p.grad is None) == (q.grad is None), name
            if p.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3)


def _box(masks):
    from samtune.training.clip_step import box_prompt

    return box_prompt(masks, torch.Generator().manual_seed(5), noise=0.1, noise_max_px=20)


def test_sample_plan_follows_the_recipe():
    gt = [torch.zeros(2, 1, 32, 32, dtype=torch.bool) for _ in range(8)]
    for m in gt:
        m[:, :, 4:20, 4:20] = True
    seen = {"points": 0, "masks": 0, "two_init": 0}
    for seed in range(40):
        plan = sample_plan(VideoRecipe(), gt, torch.Generator().manual_seed(seed))
        assert plan.init_cond_frames[0] == 0 and len(plan.init_cond_frames) in (1, 2)
        if plan.use_points:
            seen["points"] += 1
            assert plan.correct_frames[: len(plan.init_cond_frames)] == plan.init_cond_frames
            assert len(plan.correct_frames) in (1, 2) and not plan.mask_inputs
            assert set(plan.point_inputs) == set(plan.init_cond_frames)
        else:
            seen["masks"] += 1
            assert plan.correct_frames == [] and set(plan.mask_inputs) == set(plan.init_cond_frames)
        seen["two_init"] += len(plan.init_cond_frames) == 2
    assert all(v > 5 for v in seen.values()), seen
    again = sample_plan(VideoRecipe(), gt, torch.Generator().manual_seed(3))
    first = sample_plan(VideoRecipe(), gt, torch.Generator().manual_seed(3))
    assert again.init_cond_frames == first.init_cond_frames
    # only eligible (annotated) frames are prompted or corrected
    plan = sample_plan(
        VideoRecipe(point_prob=1.0, rand_init_cond_frames=False, rand_frames_to_correct=False),
        gt,
        torch.Generator().manual_seed(0),
        eligible=[5],
    )
    assert plan.init_cond_frames == [0, 5] and plan.correct_frames == [0, 5]


def test_recipe_checks():
    with pytest.raises(ValueError, match="num_frames_to_correct"):
        VideoRecipe(num_init_cond_frames=3, num_frames_to_correct=2)
    with pytest.raises(ValueError, match="point_prob"):
        VideoRecipe(point_prob=1.5)
