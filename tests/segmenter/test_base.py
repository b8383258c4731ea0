"""The Segmenter interface and SAM 2.1's implementation of it (real architecture, 128 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.segmenter.base import Segmenter
from samtune.segmenter.sam2 import (
    Sam2Segmenter,
    as_segmenter,
    decode,
    encode,
    normalize_images,
    upsample_logits,
)
from tests.helpers import make_blob_sample


def _images() -> torch.Tensor:
    samples = [make_blob_sample(size=(128, 128), n=2, seed=0)]
    return normalize_images(
        torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples])
    )


def _levels(features) -> list[torch.Tensor]:
    return [features.image_embed, *features.high_res]


def test_sam2_segmenter_is_the_free_functions_and_honours_a_frozen_encoder(tiny_model):
    segmenter = Sam2Segmenter(tiny_model)
    assert segmenter.model is tiny_model and segmenter.image_size == 128
    assert as_segmenter(segmenter) is segmenter and as_segmenter(tiny_model).model is tiny_model
    images = _images()

    def saved_by_encode(segmenter):
        """Elements the autograd graph of one encode keeps, and the features."""
        saved: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel()) or t, lambda t: t
        ):
            feats = segmenter.encode(images)
        return sum(saved), feats

    with torch.no_grad():
        ref = encode(tiny_model, images)
    assert not segmenter.encoder_frozen
    graph_trains, feats = saved_by_encode(segmenter)
    for a, b in zip(_levels(feats), _levels(ref), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        img_idx = torch.tensor([0, 0, 0])
        coords = torch.tensor([[[30.0, 40.0]], [[64.0, 64.0]], [[100.0, 20.0]]])
        labels = torch.ones(3, 1, dtype=torch.int32)
        boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0]] * 3)
        out = segmenter.decode(feats, img_idx, coords, labels, boxes=boxes, multimask_output=True)
        want = decode(tiny_model, ref, img_idx, coords, labels, boxes=boxes, multimask_output=True)
    assert out.low_res_logits.shape == (3, 3, 32, 32)
    assert torch.equal(out.low_res_logits, want.low_res_logits)
    assert torch.equal(out.iou_pred, want.iou_pred)
    up = segmenter.upsample(out.low_res_logits, (128, 128))
    assert torch.equal(up, upsample_logits(out.low_res_logits, (128, 128)))

    # --- a frozen encoder: no graph through it (the cache's use: tests/segmenter/test_cache.py)
    tiny_model.image_encoder.requires_grad_(False)
    assert segmenter.encoder_frozen and segmenter.enable_activation_checkpointing() == 0
    graph_frozen, frozen = saved_by_encode(segmenter)
    # only what trains after the encoder (conv_s0/conv_s1, no_mem_embed) keeps activations
    assert frozen.high_res[0].requires_grad and graph_frozen < 0.2 * graph_trains
    for a, c in zip(_levels(frozen), _levels(ref), strict=True):
        assert torch.equal(a, c)


def test_a_family_must_implement_the_whole_interface():
    class HalfDone(Segmenter):
        image_size = 64

        def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
            return torch.zeros(len(images), 3, 64, 64)

    with pytest.raises(TypeError, match="abstract"):
        HalfDone()
