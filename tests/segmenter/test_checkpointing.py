"""Activation checkpointing: same gradients as without it, fewer saved activations."""

from __future__ import annotations

import copy

import pytest
import torch

from samtune.models import ModelSpec
from samtune.models.adapters import LoRAAdapter
from samtune.prompts import PromptSimulator
from samtune.segmenter.checkpointing import (
    disable_activation_checkpointing,
    enable_activation_checkpointing,
    hiera_blocks,
    is_activation_checkpointing,
)
from samtune.segmenter.sam2 import encode, normalize_images
from samtune.training.loss import SAM2Loss
from samtune.training.module import SamTuneModule
from samtune.training.optim import OptimConfig
from tests.helpers import make_blob_sample

LORA_TARGET = r"image_encoder\.trunk\.blocks\.\d+\.attn\.(qkv|proj)"


def _add_lora(model: torch.nn.Module) -> torch.nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGET), model
    )
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # lora_B starts at zero; make the LoRA path matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _loss_and_grads(model: torch.nn.Module, images: torch.Tensor, weights: list[torch.Tensor]):
    model.zero_grad(set_to_none=True)
    feats = encode(model, images)
    levels = [feats.image_embed, *feats.high_res]
    loss = sum((f * w).sum() for f, w in zip(levels, weights))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _inputs(model: torch.nn.Module):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, model.image_size, model.image_size, generator=gen)
    with torch.no_grad():
        shapes = [f.shape for f in (lambda f: [f.image_embed, *f.high_res])(encode(model, images))]
    return images, [torch.randn(s, generator=gen) for s in shapes]


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_same_gradients_with_and_without_checkpointing(tiny_model, mode):
    model = tiny_model.train()
    if mode == "lora":
        model = _add_lora(model)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    images, weights = _inputs(model)

    loss_ref, grads_ref = _loss_and_grads(model, images, weights)
    assert enable_activation_checkpointing(model) == 12  # hiera_tiny has 12 blocks
    loss_ckpt, grads_ckpt = _loss_and_grads(model, images, weights)

    assert torch.equal(loss_ref, loss_ckpt)
    assert grads_ref.keys() == grads_ckpt.keys()
    encoder_grads = [n for n in grads_ref if n.startswith("image_encoder.trunk.blocks.")]
    assert encoder_grads, "no gradient reached the Hiera blocks"
    if mode == "lora":
        assert all("lora_" in n for n in grads_ref)
    for name in grads_ref:
        torch.testing.assert_close(grads_ckpt[name], grads_ref[name], rtol=0, atol=0, msg=name)


def _saved_bytes(model: torch.nn.Module, images: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        feats = encode(model, images)
    del feats
    return total


def test_checkpointing_saves_far_fewer_activations(tiny_model):
    model = tiny_model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    images = torch.randn(2, 3, 128, 128)
    plain = _saved_bytes(model, images)
    enable_activation_checkpointing(model)
    checkpointed = _saved_bytes(model, images)
    # only block inputs (and the non-block layers) are kept: well under half of the plain graph
    assert checkpointed < 0.4 * plain, (checkpointed, plain)


def test_no_grad_and_state_dict_unchanged_and_reversible(tiny_model):
    model = tiny_model.eval()
    keys = list(model.state_dict().keys())
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        ref = encode(model, images).image_embed
    assert enable_activation_checkpointing(model) == 12
    assert enable_activation_checkpointing(model) == 12  # idempotent
    assert is_activation_checkpointing(model)
    assert list(model.state_dict().keys()) == keys
    with torch.no_grad():
        assert torch.equal(encode(model, images).image_embed, ref)
    twin = copy.deepcopy(model)  # the instance-level forward survives a deep copy
    assert is_activation_checkpointing(twin)
    assert all(b.forward.__self__ is b for b in hiera_blocks(twin))
    assert disable_activation_checkpointing(model) == 12
    assert not is_activation_checkpointing(model)
    assert all("forward" not in vars(b) for b in hiera_blocks(model))


def test_model_without_hiera_blocks_is_an_error():
    with pytest.raises(ValueError, match="Hiera blocks"):
        enable_activation_checkpointing(torch.nn.Linear(2, 2))


def test_module_step_same_loss_and_gradients_with_all_checkpointing(tiny_checkpoint):
    """SamTuneModule with LoRA: Hiera-block and prompt-step checkpointing change no number."""

    sample = make_blob_sample(size=(128, 128), n=3, seed=3)
    images = normalize_images(torch.from_numpy(sample.image).permute(2, 0, 1)[None])
    masks = [torch.from_numpy(sample.masks)]

    def step(checkpointing: bool):
        torch.manual_seed(0)  # LoRA init
        module = SamTuneModule(
            model=ModelSpec("sam2.1_hiera_tiny", image_size=128, checkpoint=str(tiny_checkpoint)),
            adapter=LoRAAdapter(rank=4),
            prompts=PromptSimulator(correction_clicks=2, max_objects_per_image=2),
            loss=SAM2Loss(),
            optim=OptimConfig(),
            activation_checkpointing=checkpointing,
            checkpoint_prompt_steps=checkpointing,
        )
        with torch.no_grad():  # lora_B starts at zero; make the LoRA path matter
            for name, p in module.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.full_like(p, 0.01))
        generator = torch.Generator().manual_seed(5)
        gt, img_idx = module.gather_objects(masks, generator)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.numel() * t.element_size()) or t, lambda t: t
        ):
            terms = module.interactive_loss(module.encode_images(images), gt, img_idx, generator)
        terms["loss"].backward()
        grads = {n: p.grad for n, p in module.model.named_parameters() if p.grad is not None}
        return terms, grads, sum(saved)

    terms_ref, grads_ref, saved_ref = step(False)
    terms_ckpt, grads_ckpt, saved_ckpt = step(True)
    for k in terms_ref:
        assert torch.equal(terms_ckpt[k], terms_ref[k]), k
    assert grads_ckpt.keys() == grads_ref.keys()
    assert any("lora_" in n for n in grads_ref) and any("sam_mask_decoder" in n for n in grads_ref)
    for name in grads_ref:
        assert torch.equal(grads_ckpt[name], grads_ref[name]), name
    assert saved_ckpt < 0.3 * saved_ref, (saved_ckpt, saved_ref)
