"""The interactive training loss on a Segmenter, without Lightning (real sam2 tiny, 128 px)."""

from __future__ import annotations

import torch

from samtune.prompts import PromptSimulator
from samtune.segmenter.base import Decoded
from samtune.segmenter.sam2 import Sam2Segmenter, normalize_images
from samtune.training.interactive import NO_OBJECT_LOGIT, gather_objects, interactive_loss
from samtune.training.loss import SAM2Loss
from tests.helpers import make_blob_sample


class RecordingSegmenter(Sam2Segmenter):
    """SAM 2.1 as it is, noting the prompts of every decoder pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.calls: list[dict] = []

    def decode(self, features, img_idx, coords, labels, **kwargs):
        self.calls.append(
            {
                "clicks": 0 if coords is None else int(coords.shape[1]),
                "box": kwargs.get("boxes") is not None,
                "mask_input": kwargs.get("mask_input") is not None,
                "multimask": kwargs["multimask_output"],
            }
        )
        return super().decode(features, img_idx, coords, labels, **kwargs)


def test_gather_objects_flattens_the_batch():
    masks = [torch.ones(2, 8, 8, dtype=torch.bool), torch.zeros(0, 8, 8, dtype=torch.bool)]
    masks.append(torch.ones(1, 8, 8, dtype=torch.bool))
    gt, idx = gather_objects(masks, PromptSimulator(), None)
    assert gt.shape == (3, 8, 8) and idx.tolist() == [0, 0, 2]
    assert gather_objects([masks[1]], PromptSimulator(), None) == (None, None)


def test_interactive_loss_runs_sam2s_prompt_loop_on_a_segmenter(tiny_model):
    for name, p in tiny_model.named_parameters():  # adapter=frozen
        p.requires_grad_(name.startswith(("sam_prompt_encoder.", "sam_mask_decoder.")))
    segmenter = RecordingSegmenter(tiny_model)
    samples = [make_blob_sample(size=(128, 128), n=2, seed=0)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples])
    prompts = PromptSimulator(correction_clicks=2, box_prob=0.0)
    gt, img_idx = gather_objects([torch.from_numpy(s.masks) for s in samples], prompts, None)
    features = segmenter.encode(normalize_images(images))
    terms = interactive_loss(
        segmenter,
        features,
        gt,
        img_idx,
        torch.Generator().manual_seed(0),
        prompts=prompts,
        loss_fn=SAM2Loss(),
    )
    # one click, then a correction click per step with the previous logits fed back
    assert [c["clicks"] for c in segmenter.calls] == [1, 2, 3]
    assert [c["mask_input"] for c in segmenter.calls] == [False, True, True]
    assert [c["multimask"] for c in segmenter.calls] == [True, False, False]
    assert not any(c["box"] for c in segmenter.calls)
    assert {"loss", "focal", "dice", "iou"} <= set(terms) and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = {n for n, p in tiny_model.named_parameters() if p.grad is not None}
    assert any(n.startswith("sam_mask_decoder.") for n in grads)
    assert not any(n.startswith("image_encoder.") for n in grads)


class ScoreForcingSegmenter(Sam2Segmenter):
    """SAM 2.1 with the object score of the first object forced to "no object"."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.mask_inputs: list[torch.Tensor | None] = []

    def decode(self, features, img_idx, coords, labels, **kwargs):
        self.mask_inputs.append(kwargs.get("mask_input"))
        out = super().decode(features, img_idx, coords, labels, **kwargs)
        scores = out.object_score_logits.clone()
        scores[0] = -3.0
        scores[1:] = scores[1:].abs() + 1.0
        return Decoded(out.low_res_logits, out.iou_pred, scores)


class RecordingLoss(SAM2Loss):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logits: list[torch.Tensor] = []

    def forward(self, logits, iou_pred, object_score_logits, gt):
        self.logits.append(logits.detach())
        return super().forward(logits, iou_pred, object_score_logits, gt)


def _gated_run(tiny_model, gate: bool):
    segmenter = ScoreForcingSegmenter(tiny_model)
    sample = make_blob_sample(size=(128, 128), n=2, seed=0)
    images = torch.from_numpy(sample.image).permute(2, 0, 1)[None]
    prompts = PromptSimulator(correction_clicks=1, box_prob=0.0)
    gt, img_idx = gather_objects([torch.from_numpy(sample.masks)], prompts, None)
    loss_fn = RecordingLoss(gate_masks_by_object_score=gate)
    with torch.no_grad():
        interactive_loss(
            segmenter,
            segmenter.encode(normalize_images(images)),
            gt,
            img_idx,
            torch.Generator().manual_seed(0),
            prompts=prompts,
            loss_fn=loss_fn,
        )
    return loss_fn.logits, segmenter.mask_inputs


def test_masks_of_absent_objects_are_gated_as_sam2_does(tiny_model):
    logits, mask_inputs = _gated_run(tiny_model, gate=True)
    assert len(logits) == 2 and mask_inputs[0] is None
    for step in logits:  # the loss sees -1024 for the "no object" object, raw logits elsewhere
        assert torch.all(step[0] == NO_OBJECT_LOGIT)
        assert not torch.any(step[1:] == NO_OBJECT_LOGIT)
    assert torch.all(mask_inputs[1][0] == NO_OBJECT_LOGIT)  # and so does the mask fed back
    assert not torch.any(mask_inputs[1][1:] == NO_OBJECT_LOGIT)


def test_gating_can_be_turned_off(tiny_model):
    logits, mask_inputs = _gated_run(tiny_model, gate=False)
    assert not any(torch.any(step == NO_OBJECT_LOGIT) for step in logits)
    assert not torch.any(mask_inputs[1] == NO_OBJECT_LOGIT)
    assert SAM2Loss().gate_masks_by_object_score  # the default is SAM 2's
