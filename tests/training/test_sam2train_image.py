"""samtune's image training step against SAM 2's own training code.

The same random-init sam2.1_hiera_tiny weights, the same two synthetic images (five objects), the
same first prompt and the same correction clicks go through

* samtune: :func:`samtune.training.interactive.interactive_loss` (what
  ``SamTuneModule.training_step`` runs) with :class:`~samtune.training.loss.SAM2Loss`, and
* SAM 2: ``training.model.sam2.SAM2Train.forward`` on a one-frame "video" (SAM 2 trains on
  images that way) and ``training.loss_fns.MultiStepMultiMasksAndIous``,

and every prediction step's candidate-mask logits, predicted IoUs, object-score logits, the mask
fed back, the prediction the next click is drawn from and the loss terms agree, as do the summed
loss and the gradients of the mask decoder and prompt encoder.

Clicks: SAM2Train's samplers (``get_next_point``, ``sample_box_points``) are replaced by ones that
hand it the prompts samtune drew; each replayed correction click is checked to lie in the error
region of SAM2Train's own prediction with the label SAM 2's sampler gives it (positive in a miss,
negative in a false alarm), so only the uniform draw inside that region is shared, not the region.

samtune's defaults and the SAM2Train settings they correspond to (``sam2.1_hiera_b+_MOSE_finetune``,
checked by :func:`test_defaults_follow_sam2_training_config`):

* first prompt: ``prompts.box_prob=0.5`` = ``prob_to_use_box_input_for_train=0.5`` (on a one-frame
  video SAM2Train always uses point/box input, ``prob_to_use_pt_input`` is forced to 1);
* correction steps: ``prompts.correction_clicks=7`` = ``num_correction_pt_per_frame=7`` (on one
  frame ``num_frames_to_correct`` is forced to 1);
* click from the ground truth: ``prompts.click_from_gt_prob=0.1`` =
  ``prob_to_sample_from_gt_for_train=0.1``; a documented difference: SAM 2 draws it once per step
  for all objects, samtune per object (the test sets both to 0);
* multimask on the first step only when it is a single click
  (``prompts.multimask_single_click=true`` = ``multimask_output_in_sam=true``,
  ``multimask_min_pt_num=0``, ``multimask_max_pt_num=1``); a box (two corner points) or any click
  added gives one mask;
* object scores and gating: ``pred_obj_scores=true`` with ``loss.supervise_object_score=true``, and
  the mask logits set to -1024 where the object score is <= 0 before the loss, the mask fed back
  and the next click (``loss.gate_masks_by_object_score=true``, as ``SAM2Base._forward_sam_heads``);
* mask fed back: the previous step's low-resolution logits of the mask with the highest predicted
  IoU (gated), with their gradient, as ``_iter_correct_pt_sampling``;
* loss: ``MultiStepMultiMasksAndIous`` with SAM 2.1's ``weight_dict`` (20, 1, 1, 1),
  ``supervise_all_iou``, ``iou_use_l1_loss``, ``focal_gamma_obj_score=0``,
  ``focal_alpha_obj_score=-1`` (= ``SAM2Loss()``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import samtune.training.interactive as interactive
from samtune.models import build_sam2_model
from samtune.models.build import sam2_config_path
from samtune.prompts import PromptSimulator
from samtune.prompts.streams import PromptStreams
from samtune.segmenter.sam2 import Sam2Segmenter, boxes_to_points
from samtune.training.interactive import NO_OBJECT_LOGIT, gather_objects, interactive_loss
from samtune.training.loss import SAM2Loss
from tests.helpers import SMALL_SIZE, make_blob_sample
from tests.training.sam2_official import SAM2_LOSS_SETTINGS, build, official_training_modules

S = SMALL_SIZE
CORRECTIONS = 3
TERMS = {"focal": "loss_mask", "dice": "loss_dice", "iou": "loss_iou", "object_score": "loss_class"}
#: parameters whose gradients are compared (the image encoder's are checked with a looser bound)
DECODER = ("sam_mask_decoder.", "sam_prompt_encoder.")


def scene() -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Two images of samtune's synthetic data at S x S, three and two objects."""
    samples = [make_blob_sample((S, S), n=n, seed=seed) for seed, n in ((3, 3), (4, 2))]
    return [s.image for s in samples], [torch.from_numpy(s.masks) for s in samples]


def samtune_model(state: dict[str, torch.Tensor]) -> Sam2Segmenter:
    model = build_sam2_model("sam2.1_hiera_tiny", image_size=S)
    model.load_state_dict(state, strict=True)
    return Sam2Segmenter(model.train())


def record_samtune(monkeypatch, segmenter, images, gt, img_idx, prompts, loss_fn):
    """Run samtune's step; returns its loss terms and, per prediction step, the decoder's
    inputs and outputs and its loss terms, and the predictions the correction clicks came from."""
    steps, preds = [], []
    step_fn, correction = interactive.prompt_step, PromptStreams.correction

    def recording_step(*args):
        out, terms = step_fn(*args)
        coords, labels, boxes, mask_input, multimask = args[4:9]
        steps.append(
            SimpleNamespace(
                coords=coords,
                labels=labels,
                boxes=boxes,
                mask_input=mask_input,
                multimask=multimask,
                out=out,
                terms=terms,
            )
        )
        return out, terms

    def recording_correction(self, simulator, pred, *rest):
        preds.append(pred.clone())
        return correction(self, simulator, pred, *rest)

    with monkeypatch.context() as m:
        m.setattr(interactive, "prompt_step", recording_step)
        m.setattr(PromptStreams, "correction", recording_correction)
        torch.manual_seed(11)
        features = segmenter.encode(images)
        totals = interactive_loss(
            segmenter,
            features,
            gt,
            img_idx,
            torch.Generator().manual_seed(7),
            prompts=prompts,
            loss_fn=loss_fn,
        )
    return totals, steps, preds


def gate_half(state, monkeypatch, images, gt, img_idx, prompts) -> dict[str, torch.Tensor]:
    """``state`` with the object-score head's bias moved so that about half of the objects read
    "no object" on the first step (random-init heads tend to say the same for all), with the
    threshold halfway between two objects' scores."""
    with torch.no_grad():
        _, steps, _ = record_samtune(
            monkeypatch, samtune_model(state), images, gt, img_idx, prompts, SAM2Loss()
        )
    scores = steps[0].out.object_score_logits.flatten().sort().values
    k = len(scores) // 2
    key = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"
    state = dict(state)
    state[key] = state[key] - (scores[k - 1] + scores[k]) / 2
    return state


@pytest.mark.parametrize("first", ["click", "box"])
def test_image_step_equals_sam2train(monkeypatch, tiny_state_dict, first):
    sam2_train, loss_fns = official_training_modules(monkeypatch)
    raw_images, masks = scene()
    prompts = PromptSimulator(
        box_prob=1.0 if first == "box" else 0.0,
        correction_clicks=CORRECTIONS,
        click_from_gt_prob=0.0,
        max_objects_per_image=None,
    )
    probe = samtune_model(tiny_state_dict)
    images = probe.preprocess(raw_images)
    gt, img_idx = gather_objects(masks, prompts, torch.Generator().manual_seed(0))
    assert img_idx.tolist() == [0, 0, 0, 1, 1]
    state = gate_half(tiny_state_dict, monkeypatch, images, gt, img_idx, prompts)

    ours = samtune_model(state)
    got, steps, our_preds = record_samtune(
        monkeypatch, ours, images, gt, img_idx, prompts, SAM2Loss()
    )
    assert len(steps) == 1 + CORRECTIONS
    assert [s.multimask for s in steps] == [first == "click"] + [False] * CORRECTIONS

    # SAM 2 gets samtune's first prompt and correction clicks, and checks where they lie
    official_preds = []

    def next_point(gt_masks, pred_masks, method):
        assert method == "uniform"
        if pred_masks is None:
            assert first == "click"
            return steps[0].coords, steps[0].labels
        k = len(official_preds) + 1
        official_preds.append(pred_masks[:, 0].clone())
        coords, labels = steps[k].coords[:, -1:], steps[k].labels[:, -1:]
        x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
        rows = torch.arange(len(x))
        truth = gt_masks[rows, 0, y, x]
        assert torch.equal(labels[:, 0].bool(), truth)  # positive in the object, else negative
        exact = (pred_masks == gt_masks).flatten(1).all(1)
        assert bool(((pred_masks[rows, 0, y, x] != truth) | exact).all())  # in the error region
        return coords, labels

    def box_points(gt_masks):
        assert first == "box"
        return boxes_to_points(steps[0].boxes)

    monkeypatch.setattr(sam2_train, "get_next_point", next_point)
    monkeypatch.setattr(sam2_train, "sample_box_points", box_points)
    official = build(
        "training.model.sam2.SAM2Train",
        S,
        prob_to_use_pt_input_for_train=0.5,  # forced to 1 on a one-frame video
        prob_to_use_box_input_for_train=1.0 if first == "box" else 0.0,
        num_correction_pt_per_frame=CORRECTIONS,
        prob_to_sample_from_gt_for_train=0.0,
    )
    official.load_state_dict(state, strict=True)
    official.train()
    batch = SimpleNamespace(
        flat_img_batch=images,
        masks=gt[None],  # T x O x H x W, T = 1
        num_frames=1,
        flat_obj_to_img_idx=[img_idx],
    )
    torch.manual_seed(11)
    want = official(batch)
    assert len(want) == 1
    want = want[0]
    criterion = loss_fns.MultiStepMultiMasksAndIous(**SAM2_LOSS_SETTINGS)
    loss_official = criterion([want], gt[None].float())

    diffs = {}

    def close(name, a, b, atol=1e-5, rtol=1e-5):
        a, b = a.detach(), b.detach()
        err = float((a.double() - b.double()).abs().max())
        rel = err / max(float(b.abs().max()), 1e-30)
        old = diffs.get(name, (0.0, 0.0))
        diffs[name] = (max(old[0], err), max(old[1], rel))
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")

    assert len(want["multistep_pred_ious"]) == len(steps)
    gated = 0
    for k, step in enumerate(steps):
        out = step.out
        low = want["multistep_pred_multimasks"][k]
        close("low_res_logits", out.low_res_logits, low)
        close(
            "high_res_logits",
            ours.upsample(out.low_res_logits, (S, S)),
            want["multistep_pred_multimasks_high_res"][k],
        )
        close("iou_pred", out.iou_pred, want["multistep_pred_ious"][k])
        close("object_score", out.object_score_logits, want["multistep_object_score_logits"][k])
        no_object = (want["multistep_object_score_logits"][k] <= 0).flatten()
        assert bool((low[no_object] == NO_OBJECT_LOGIT).all())
        assert bool((low[~no_object] > NO_OBJECT_LOGIT).all())
        gated += int(no_object.sum())
        if k:  # the mask fed back: the previous step's best mask, gated
            close("mask_input", step.mask_input, want["multistep_pred_masks"][:, k - 1 : k])
        # this step's loss terms alone
        one = {
            key: [want[key][k]]
            for key in (
                "multistep_pred_multimasks_high_res",
                "multistep_pred_ious",
                "multistep_object_score_logits",
            )
        }
        terms = criterion([one], gt[None].float())
        for ours_name, sam2_name in TERMS.items():
            close(f"step {ours_name}", step.terms[ours_name], terms[sam2_name])
    assert 0 < gated < len(steps) * len(gt), gated  # gating happened, not everywhere
    # the next clicks were drawn from the same predictions
    assert len(our_preds) == len(official_preds) == CORRECTIONS
    for a, b in zip(our_preds, official_preds):
        assert torch.equal(a, b)

    for ours_name, sam2_name in TERMS.items():
        close(ours_name, got[ours_name], loss_official[sam2_name])
    close("loss", got["loss"], loss_official["core_loss"])

    got["loss"].backward()
    loss_official["core_loss"].backward()
    named = dict(official.named_parameters())
    compared = 0
    for name, p in ours.model.named_parameters():
        q = named[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:
            continue
        scale = float(q.grad.abs().max())
        if name.endswith("k_proj.bias"):  # adds the same logit to every key: its gradient is 0
            assert scale < 1e-8 and float(p.grad.abs().max()) < 1e-8, name
        elif name.startswith(DECODER):
            close("decoder grad", p.grad, q.grad, atol=1e-5 * scale)
            compared += 1
        else:
            close("encoder grad", p.grad, q.grad, atol=1e-4 * scale, rtol=1e-4)
    assert compared > 50
    print(first, {k: f"{e:.1e} ({r:.1e})" for k, (e, r) in diffs.items()})

    # without gating samtune's step is not SAM 2's: the comparison above can fail
    with torch.no_grad():
        ungated, _, _ = record_samtune(
            monkeypatch,
            ours,
            images,
            gt,
            img_idx,
            prompts,
            SAM2Loss(gate_masks_by_object_score=False),
        )
    assert abs(float(ungated["loss"]) - float(loss_official["core_loss"].detach())) > 1e-3


def test_defaults_follow_sam2_training_config():
    """samtune's prompt and loss defaults are the values of SAM 2.1's training config."""
    cfg = OmegaConf.load(
        sam2_config_path("configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml")
    )
    model = cfg.trainer.model
    loss = cfg.trainer.loss.all
    prompts, ours = PromptSimulator(), SAM2Loss()
    assert prompts.box_prob == model.prob_to_use_box_input_for_train
    assert prompts.correction_clicks == model.num_correction_pt_per_frame
    assert prompts.click_from_gt_prob == model.prob_to_sample_from_gt_for_train
    assert prompts.multimask_single_click == model.multimask_output_in_sam
    assert (model.multimask_min_pt_num, model.multimask_max_pt_num) == (0, 1)
    assert ours.supervise_object_score == model.pred_obj_scores == loss.pred_obj_scores
    assert ours.gate_masks_by_object_score == model.pred_obj_scores
    weights = loss.weight_dict
    assert (ours.focal_weight, ours.dice_weight, ours.iou_weight, ours.object_score_weight) == (
        weights.loss_mask,
        weights.loss_dice,
        weights.loss_iou,
        weights.loss_class,
    )
    assert ours.iou_use_l1 == loss.iou_use_l1_loss and loss.supervise_all_iou
    assert (ours.focal_alpha, ours.focal_gamma) == (0.25, 2.0)  # the loss class's own defaults
    assert "focal_alpha" not in loss and "focal_gamma" not in loss
