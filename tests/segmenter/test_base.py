"""The Segmenter interface and SAM 2.1's implementation of it (real architecture, 128 px)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.segmenter.base import Segmenter
from samtune.segmenter.cache import EmbeddingCache
from samtune.segmenter.sam2 import (
    Sam2Segmenter,
    as_segmenter,
    decode,
    encode,
    normalize_images,
    preprocess_like_predictor,
    upsample_logits,
)
from tests.helpers import make_blob_sample


def _images() -> torch.Tensor:
    samples = [make_blob_sample(size=(128, 128), n=2, seed=s) for s in (0, 1)]
    return normalize_images(
        torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples])
    )


def _levels(features) -> list[torch.Tensor]:
    return [features.image_embed, *features.high_res]


def test_sam2_segmenter_is_the_free_functions(tiny_model):
    segmenter = Sam2Segmenter(tiny_model)
    assert segmenter.model is tiny_model and segmenter.image_size == 128
    assert as_segmenter(segmenter) is segmenter and as_segmenter(tiny_model).model is tiny_model
    images = _images()
    with torch.no_grad():
        feats, ref = segmenter.encode(images), encode(tiny_model, images)
        for a, b in zip(_levels(feats), _levels(ref), strict=True):
            assert torch.equal(a, b)
        img_idx = torch.tensor([0, 1, 1])
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
    raw = [make_blob_sample(size=(90, 70), seed=2).image]
    assert torch.equal(segmenter.preprocess(raw), preprocess_like_predictor(raw, 128))


def test_frozen_encoder_builds_no_graph_and_uses_the_cache(tiny_model):
    images = _images()
    with torch.no_grad():
        ref = encode(tiny_model, images)
    cache = EmbeddingCache(storage_dtype="float32")

    def saved_by_encode(segmenter):
        """Elements the autograd graph of one encode keeps, and the features."""
        saved: list[int] = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel()) or t, lambda t: t
        ):
            feats = segmenter.encode(images)
        return sum(saved), feats

    trains = Sam2Segmenter(tiny_model, embedding_cache=cache)
    assert not trains.encoder_frozen
    graph_trains, feats = saved_by_encode(trains)  # the encoder trains: no cache
    assert feats.image_embed.requires_grad and cache.stats.misses == 0
    tiny_model.image_encoder.requires_grad_(False)
    frozen = Sam2Segmenter(tiny_model, embedding_cache=cache)
    assert frozen.encoder_frozen and frozen.enable_activation_checkpointing() == 0
    graph_frozen, first = saved_by_encode(frozen)
    second = frozen.encode(images)
    assert (cache.stats.misses, cache.stats.hits) == (2, 2)
    # only what trains after the encoder (conv_s0/conv_s1) keeps activations
    assert first.high_res[0].requires_grad and graph_frozen < 0.2 * graph_trains
    for a, b, c in zip(_levels(first), _levels(second), _levels(ref), strict=True):
        assert torch.equal(a, b) and torch.allclose(a, c, atol=1e-5)
    no_cache = Sam2Segmenter(tiny_model)
    for a, c in zip(_levels(no_cache.encode(images)), _levels(ref), strict=True):
        assert torch.allclose(a, c, atol=1e-5)


def test_a_family_must_implement_the_whole_interface():
    class HalfDone(Segmenter):
        image_size = 64

        def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
            return torch.zeros(len(images), 3, 64, 64)

    with pytest.raises(TypeError, match="abstract"):
        HalfDone()
