"""Embedding cache: hits equal recomputing, keys change with every key part, memory/disk tiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.models import ModelSpec, build_sam2_model
from samtune.models.adapters import FrozenEncoder
from samtune.prompts import PromptSimulator
from samtune.segmenter.cache import EmbeddingCache, encode_frozen
from samtune.segmenter.sam2 import decode, encode, normalize_images, upsample_logits
from samtune.training.loss import SAM2Loss
from samtune.training.module import SamTuneModule
from samtune.training.optim import OptimConfig
from tests.helpers import make_blob_sample

S = 128


def _freeze_encoder(model: torch.nn.Module, *, convs_trainable: bool = True) -> torch.nn.Module:
    """What adapter=frozen does: only the prompt encoder and mask decoder train."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(("sam_prompt_encoder.", "sam_mask_decoder.")))
    if not convs_trainable:
        for conv in (model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1):
            conv.requires_grad_(False)
    return model


def _images(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, S, S, generator=torch.Generator().manual_seed(seed))


def _levels(feats) -> list[torch.Tensor]:
    return [feats.image_embed, *feats.high_res]


def _loss_and_decoder_grads(model, feats):
    """SAM 2's loss for two boxes and one click (one object each), and the decoder's gradients."""
    model.zero_grad(set_to_none=True)
    gt = torch.zeros(3, S, S, dtype=torch.bool)
    gt[0, 20:60, 30:70] = True
    gt[1, 70:110, 10:50] = True
    gt[2, 40:90, 60:120] = True
    img_idx = torch.tensor([0, 1, 1])
    boxes = torch.tensor([[30.0, 20, 70, 60], [10, 70, 50, 110], [60, 40, 120, 90]])
    out = decode(model, feats, img_idx, None, None, boxes=boxes, multimask_output=False)
    logits = upsample_logits(out.low_res_logits, (S, S))
    loss = SAM2Loss()(logits, out.iou_pred, out.object_score_logits, gt)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def test_encode_frozen_matches_engine_encode(tiny_model):
    images = _images()
    with torch.no_grad():
        ref = encode(tiny_model, images)
    got = encode_frozen(tiny_model, images)
    for a, b in zip(_levels(got), _levels(ref)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("convs_trainable", [True, False], ids=["neck", "features"])
def test_cache_hit_gives_the_same_loss_as_recomputing(tiny_model, convs_trainable):
    model = _freeze_encoder(tiny_model, convs_trainable=convs_trainable)
    cache = EmbeddingCache(storage_dtype="float32")
    assert cache.resolve_stage(model) == ("neck" if convs_trainable else "features")
    images = _images()

    loss_ref, grads_ref = _loss_and_decoder_grads(model, encode_frozen(model, images))
    miss = cache.encode(model, images)
    hit = cache.encode(model, images)
    assert (cache.stats.misses, cache.stats.hits) == (2, 2)
    with torch.no_grad():
        plain = encode(model, images)
    for a, b in zip(_levels(hit), _levels(plain)):
        assert torch.equal(a, b)

    loss_miss, _ = _loss_and_decoder_grads(model, miss)
    loss_hit, grads_hit = _loss_and_decoder_grads(model, hit)
    assert torch.equal(loss_hit, loss_ref) and torch.equal(loss_miss, loss_ref)
    assert grads_hit.keys() == grads_ref.keys()
    assert not any(n.startswith("image_encoder.") for n in grads_hit)
    assert ("sam_mask_decoder.conv_s0.weight" in grads_hit) == convs_trainable
    for name in grads_ref:
        assert torch.equal(grads_hit[name], grads_ref[name]), name


def test_bf16_storage_hit_equals_miss_and_is_close_to_fp32(tiny_model):
    model = _freeze_encoder(tiny_model)
    cache = EmbeddingCache()  # bf16 by default
    images = _images()
    miss = cache.encode(model, images)
    hit = cache.encode(model, images)
    for a, b in zip(_levels(hit), _levels(miss)):
        assert a.dtype == torch.float32 and torch.equal(a, b)
    loss_ref, _ = _loss_and_decoder_grads(model, encode_frozen(model, images))
    loss_hit, _ = _loss_and_decoder_grads(model, hit)
    torch.testing.assert_close(loss_hit, loss_ref, rtol=2e-2, atol=1e-3)


def test_batch_with_some_hits_runs_encoder_on_misses_only(tiny_model):
    model = _freeze_encoder(tiny_model)
    cache = EmbeddingCache(storage_dtype="float32")
    a, b = _images(2, seed=1), _images(1, seed=2)
    cache.encode(model, a[:1])
    calls = []
    handle = model.image_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    mixed = torch.cat([a[:1], b, a[1:]])
    got = cache.encode(model, mixed)
    handle.remove()
    assert calls == [2]  # one encoder pass, for the two new images
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)
    with torch.no_grad():  # what the encoder gave in each pass (float sums depend on batch size)
        first, rest = encode(model, a[:1]), encode(model, torch.cat([b, a[1:]]))
    for x, y, z in zip(_levels(got), _levels(first), _levels(rest)):
        assert torch.equal(x, torch.cat([y, z]))


def test_key_changes_with_pixels_weights_size_and_dtype(tiny_model, tiny_checkpoint):
    model = _freeze_encoder(tiny_model)
    cache = EmbeddingCache()
    images = _images(1)
    key = cache.keys(model, images)[0]
    assert cache.keys(model, images.clone())[0] == key  # same content, same key

    flipped = images.flip(-1)  # an augmentation: new pixels, new key
    assert cache.keys(model, flipped)[0] != key
    nudged = images.clone()
    nudged[0, 0, 0, 0] += 1e-3
    assert cache.keys(model, nudged)[0] != key

    with torch.no_grad():  # any change of an encoder weight
        model.image_encoder.trunk.blocks[5].mlp.layers[0].bias[3] += 1e-4
    assert cache.keys(model, images)[0] != key
    with torch.no_grad():
        model.image_encoder.trunk.blocks[5].mlp.layers[0].bias[3] -= 1e-4
    restored = cache.keys(model, images)[0]
    # the same values give the same digest again (float add/sub may not round-trip exactly)
    assert (restored == key) == torch.equal(
        model.image_encoder.state_dict()["trunk.blocks.5.mlp.layers.0.bias"],
        build_sam2_model(
            "sam2.1_hiera_tiny", image_size=S, checkpoint=tiny_checkpoint
        ).image_encoder.state_dict()["trunk.blocks.5.mlp.layers.0.bias"],
    )

    assert EmbeddingCache(storage_dtype="float32").keys(model, images)[0] != restored
    model.sam_mask_decoder.conv_s0.requires_grad_(False)
    model.sam_mask_decoder.conv_s1.requires_grad_(False)  # stage neck -> features
    assert cache.keys(model, images)[0] != restored

    bigger = _freeze_encoder(
        build_sam2_model("sam2.1_hiera_tiny", image_size=160, checkpoint=tiny_checkpoint)
    )
    big_images = torch.nn.functional.interpolate(images, size=(160, 160))
    assert cache.keys(bigger, big_images)[0] not in {key, restored}


def test_weight_change_invalidates_cached_features(tiny_model):
    model = _freeze_encoder(tiny_model)
    cache = EmbeddingCache(storage_dtype="float32")
    images = _images(1)
    before = cache.encode(model, images)
    with torch.no_grad():
        model.image_encoder.neck.convs[0].conv.weight.mul_(1.5)
    after = cache.encode(model, images)
    assert cache.stats.misses == 2
    with torch.no_grad():
        ref = encode(model, images)
    assert torch.equal(after.image_embed, ref.image_embed)
    assert not torch.equal(after.image_embed, before.image_embed)


def test_memory_budget_spills_to_disk_as_bf16_memmaps(tiny_model, tmp_path):
    model = _freeze_encoder(tiny_model)
    images = _images(3)
    ref_cache = EmbeddingCache()  # the same per-image encoder passes, all kept in memory
    for i in range(3):
        ref_cache.encode(model, images[i : i + 1])
    ref = ref_cache.encode(model, images)
    entry_bytes = ref_cache.stats.memory_bytes // 3

    cache = EmbeddingCache(max_memory_mb=1.5 * entry_bytes / 2**20, cache_dir=tmp_path)
    for i in range(3):
        cache.encode(model, images[i : i + 1])
    assert cache.stats.memory_entries == 1 and cache.stats.spilled == 2
    files = sorted(tmp_path.rglob("*.npy"))
    assert len(files) == 2 * 3  # two spilled entries, three levels each
    keys = cache.keys(model, images)
    assert {f.name.split(".")[0] for f in files} == set(keys[:2])  # the key is in the file name
    assert {f.name.split(".")[2] for f in files} == {"chw", "hwc"}
    stored = np.load(files[0], mmap_mode="r")
    assert isinstance(stored, np.memmap) and stored.dtype == np.uint16

    got = cache.encode(model, images)  # all three: two from disk, one from memory
    assert cache.stats.disk_hits == 2 and cache.stats.misses == 3
    for a, b in zip(_levels(got), _levels(ref)):
        assert torch.equal(a, b)

    later_run = EmbeddingCache(max_memory_mb=0, cache_dir=tmp_path)
    later_run.encode(model, images[:1])
    assert later_run.stats.disk_hits == 1 and later_run.stats.misses == 0


def test_without_cache_dir_evicted_entries_are_dropped(tiny_model):
    model = _freeze_encoder(tiny_model)
    cache = EmbeddingCache(max_memory_mb=0)
    cache.encode(model, _images(2))
    assert cache.stats.dropped == 2 and cache.stats.memory_entries == 0
    cache.encode(model, _images(2))
    assert cache.stats.misses == 4


def test_trainable_encoder_is_refused(tiny_model):
    _freeze_encoder(tiny_model)
    tiny_model.image_encoder.trunk.blocks[0].attn.qkv.weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen image encoder.*trunk.blocks.0.attn.qkv.weight"):
        EmbeddingCache().encode(tiny_model, _images(1))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"storage_dtype": "int8"}, "storage_dtype"),
        ({"stage": "trunk"}, "stage"),
        ({"max_memory_mb": -1}, "max_memory_mb"),
    ],
)
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EmbeddingCache(**kwargs)


def _blob_batch(n: int = 2) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Normalised S x S images and their instance masks, from conftest's blob samples."""

    images, masks = [], []
    for seed in range(n):
        sample = make_blob_sample(size=(S, S), n=3, seed=seed)
        images.append(torch.from_numpy(sample.image).permute(2, 0, 1))
        masks.append(torch.from_numpy(sample.masks))
    return normalize_images(torch.stack(images)), masks


def test_module_training_loss_is_the_same_on_a_cache_hit(tiny_checkpoint):
    """SamTuneModule with adapter=frozen: SAM 2's interactive loss (box or click, then correction
    clicks) and its gradients are identical with a cache hit and with the encoder recomputed."""

    def make(cache):
        spec = ModelSpec("sam2.1_hiera_tiny", image_size=S, checkpoint=str(tiny_checkpoint))
        prompts = PromptSimulator(correction_clicks=2, max_objects_per_image=2)
        return SamTuneModule(
            model=spec,
            adapter=FrozenEncoder(),
            prompts=prompts,
            loss=SAM2Loss(),
            optim=OptimConfig(),
            embedding_cache=cache,
        )

    images, masks = _blob_batch()

    def step(module):
        module.model.zero_grad(set_to_none=True)
        generator = torch.Generator().manual_seed(7)
        gt, img_idx = module.gather_objects(masks, generator)
        terms = module.interactive_loss(module.encode_images(images), gt, img_idx, generator)
        terms["loss"].backward()
        grads = {
            n: p.grad.clone() for n, p in module.model.named_parameters() if p.grad is not None
        }
        return terms["loss"].detach(), grads

    plain = make(None)
    cached = make(EmbeddingCache(storage_dtype="float32"))
    loss_ref, grads_ref = step(plain)
    loss_miss, _ = step(cached)
    loss_hit, grads_hit = step(cached)
    assert (cached.embedding_cache.stats.misses, cached.embedding_cache.stats.hits) == (2, 2)
    assert torch.equal(loss_miss, loss_ref) and torch.equal(loss_hit, loss_ref)
    assert grads_hit.keys() == grads_ref.keys()
    assert "sam_mask_decoder.conv_s0.weight" in grads_hit  # trains with the cache too
    for name in grads_ref:
        assert torch.equal(grads_hit[name], grads_ref[name]), name
