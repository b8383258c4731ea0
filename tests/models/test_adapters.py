"""Adapters: which parameters train, LoRA placement, merging, configs."""

from __future__ import annotations

import re

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from samtune.models import build_sam2_model
from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter, lora_modules
from samtune.segmenter.sam2 import decode, encode, normalize_images
from samtune.training.optim import param_groups
from tests.helpers import REPO, SMALL_SIZE

VIDEO_ONLY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
    "no_mem_embed",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "maskmem_tpos_enc",
)


def fresh_model():
    return build_sam2_model("sam2.1_hiera_tiny", image_size=SMALL_SIZE)


def toy_forward(model, seed: int = 0) -> torch.Tensor:
    """A scalar that depends on the encoder, the prompt encoder and the mask decoder."""
    g = torch.Generator().manual_seed(seed)
    images = normalize_images(torch.rand(2, 3, SMALL_SIZE, SMALL_SIZE, generator=g))
    feats = encode(model, images)
    coords = torch.tensor([[[40.0, 50.0]], [[90.0, 70.0]]])
    out = decode(model, feats, torch.tensor([0, 1]), coords, torch.ones(2, 1, dtype=torch.int))
    return out.low_res_logits.pow(2).mean() + out.iou_pred.mean() + out.object_score_logits.mean()


def sgd_step(model) -> dict[str, torch.Tensor]:
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    toy_forward(model).backward()
    opt.step()
    after = model.state_dict()
    return {k: v for k, v in before.items() if not torch.equal(v, after[k])}


def test_lora_wraps_only_trunk_attention():
    model = fresh_model()
    fresh_keys = list(model.state_dict())
    LoRAAdapter().apply(model)
    assert type(model).__name__ == "SAM2Base"
    wrapped = set(lora_modules(model))
    expected = {
        f"image_encoder.trunk.blocks.{i}.attn.{n}" for i in range(12) for n in ("qkv", "proj")
    }
    assert wrapped == expected
    # the stage-change projections exist and are untouched, and so is memory attention
    stage_proj = [
        n
        for n, m in model.named_modules()
        if re.fullmatch(r"image_encoder\.trunk\.blocks\.\d+\.proj", n)
    ]
    assert len(stage_proj) == 3
    assert all(type(model.get_submodule(n)) is torch.nn.Linear for n in stage_proj)
    assert not any(n.startswith("memory_attention") for n in wrapped)
    # key names change only inside the wrapped layers
    keys = list(model.state_dict())
    renamed = [k.replace(".base_layer.", ".") for k in keys if ".lora_" not in k]
    assert renamed == fresh_keys
    changed = {k for k in keys if k not in set(fresh_keys)}
    assert all(any(k.startswith(w + ".") for w in wrapped) for k in changed)


def test_lora_mlp_adds_mlp_layers():
    model = LoRAAdapter(mlp=True, rank=4).apply(fresh_model())
    wrapped = set(lora_modules(model))
    assert len(wrapped) == 12 * 4
    assert "image_encoder.trunk.blocks.5.mlp.layers.1" in wrapped
    assert (
        model.get_submodule("image_encoder.trunk.blocks.5.mlp.layers.1")
        .lora_A["default"]
        .weight.shape[0]
        == 4
    )


def test_lora_trainable_parameters_are_a_small_fraction():
    model = fresh_model()
    plain_total = sum(p.numel() for p in model.parameters())
    adapter = LoRAAdapter(rank=8)
    adapter.apply(model)
    report = adapter.parameter_report(model)
    # hand count: r * (in + out) per wrapped linear layer
    lora_count = sum(8 * (m.in_features + m.out_features) for m in lora_modules(model).values())
    decoder = sum(p.numel() for p in model.sam_mask_decoder.parameters())
    prompt = sum(p.numel() for p in model.sam_prompt_encoder.parameters())
    assert report["total"] == plain_total + lora_count
    assert report["by_part"]["image_encoder"]["trainable"] == lora_count
    assert report["trainable"] == lora_count + decoder + prompt
    assert report["by_part"]["video_only"]["trainable"] == 0
    assert lora_count / report["total"] < 0.01
    assert report["trainable"] / report["total"] < 0.15
    assert sum(part["total"] for part in report["by_part"].values()) == report["total"]


def test_lora_one_step_changes_only_lora_and_decoder():
    torch.manual_seed(0)
    model = LoRAAdapter().apply(fresh_model())
    changed = sgd_step(model)
    allowed = ("sam_mask_decoder.", "sam_prompt_encoder.")
    lora_b = [k for k in model.state_dict() if ".lora_B." in k]
    for key in changed:
        assert key.startswith(allowed) or ".lora_" in key, f"{key} changed but should be frozen"
    # lora_B starts at zero, so after one step it is what moved (lora_A has no gradient yet)
    assert set(lora_b) <= set(changed)
    assert any(k.startswith("sam_mask_decoder.") for k in changed)
    assert not any(".base_layer." in k or k.startswith("image_encoder.neck") for k in changed)


def test_frozen_encoder_has_no_trainable_encoder_parameter():
    adapter = FrozenEncoder()
    model = adapter.apply(fresh_model())
    assert adapter.encoder_trainable is False
    for name, p in model.named_parameters():
        if name.startswith("image_encoder."):
            assert not p.requires_grad, name
        elif name.startswith(("sam_mask_decoder.", "sam_prompt_encoder.")):
            assert p.requires_grad, name
        else:
            assert not p.requires_grad, name
    no_prompt = FrozenEncoder(train_prompt_encoder=False).apply(fresh_model())
    assert not any(p.requires_grad for p in no_prompt.sam_prompt_encoder.parameters())
    assert all(p.requires_grad for p in no_prompt.sam_mask_decoder.parameters())
    with pytest.raises(ValueError, match="no parameter to train"):
        FrozenEncoder(train_prompt_encoder=False, train_mask_decoder=False).apply(fresh_model())


def test_full_trains_encoder_but_not_memory_modules():
    torch.manual_seed(0)
    adapter = FullFineTune()
    model = adapter.apply(fresh_model())
    assert adapter.encoder_trainable and adapter.encoder_lr_scale == pytest.approx(0.1)
    assert all(p.requires_grad for p in model.image_encoder.parameters())
    for name, p in model.named_parameters():
        if name.startswith(VIDEO_ONLY_PREFIXES):
            assert not p.requires_grad, name
    groups = param_groups(
        model, lr=1e-3, encoder_lr_scale=adapter.encoder_lr_scale, weight_decay=0.0
    )
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["encoder_decay"] == pytest.approx(1e-4)
    assert lrs["decoder_decay"] == pytest.approx(1e-3)
    changed = sgd_step(model)
    assert any(k.startswith("image_encoder.trunk.blocks.0.") for k in changed)
    assert not any(k.startswith(VIDEO_ONLY_PREFIXES) for k in changed)


def perturb_lora_and_decoder(model, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            elif name.startswith("sam_mask_decoder."):
                p.add_(torch.randn(p.shape, generator=g) * 0.01)


def test_merged_state_dict_folds_lora_and_matches_outputs():
    torch.manual_seed(0)
    adapter = LoRAAdapter(rank=4, alpha=12, dropout=0.1, mlp=True)
    model = adapter.apply(fresh_model())
    perturb_lora_and_decoder(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    merged = adapter.merged_state_dict(model)

    # the model is unchanged and still carries its LoRA layers
    assert lora_modules(model)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(v, after[k]) for k, v in before.items())
    # exactly the keys of a fresh model, in the same order
    plain = fresh_model()
    assert list(merged) == list(plain.state_dict())
    # W + alpha / r * B @ A, by hand, in every wrapped layer (attention and MLP)
    assert len(lora_modules(model)) == 48
    assert_lora_formula(merged, before, lora_modules(model), scaling=12 / 4)

    plain.load_state_dict(merged, strict=True)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        images = normalize_images(torch.rand(1, 3, SMALL_SIZE, SMALL_SIZE, generator=g))
        coords, labels = torch.tensor([[[30.0, 60.0], [80.0, 90.0]]]), torch.tensor([[1, 0]])
        boxes = torch.tensor([[20.0, 30.0, 100.0, 110.0]])
        ref = decode(model, encode(model, images), torch.tensor([0]), coords, labels, boxes=boxes)
        got = decode(plain, encode(plain, images), torch.tensor([0]), coords, labels, boxes=boxes)
    for x, y in [(ref.low_res_logits, got.low_res_logits), (ref.iou_pred, got.iou_pred)]:
        torch.testing.assert_close(y, x, rtol=0, atol=1e-5)

    # a bf16 model merges to bf16, rounded once; copy=False shares what LoRA leaves alone
    model.to(torch.bfloat16)
    state = model.state_dict()
    merged = adapter.merged_state_dict(model, copy=False)
    assert all(v.dtype == state[k].dtype for k, v in merged.items() if k in state)
    assert_lora_formula(merged, state, lora_modules(model), scaling=12 / 4)
    assert all(v.data_ptr() == state[k].data_ptr() for k, v in merged.items() if k in state)
    model.image_encoder.neck.register_buffer("lora_stray", torch.zeros(1))
    with pytest.raises(RuntimeError, match="unmerged adapter tensors"):
        adapter.merged_state_dict(model)


def assert_lora_formula(merged, state, layers, *, scaling: float) -> None:
    """Each wrapped layer's merged weight is ``W + scaling * B @ A`` (in float32, then cast)."""
    for path in layers:
        w = state[f"{path}.base_layer.weight"]
        a, b = state[f"{path}.lora_A.default.weight"], state[f"{path}.lora_B.default.weight"]
        expected = (w.float() + scaling * (b.float() @ a.float())).to(w.dtype)
        got = merged[f"{path}.weight"]
        assert got.dtype == w.dtype and not torch.equal(got, w), path
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert torch.equal(merged[f"{path}.bias"], state[f"{path}.base_layer.bias"]), path


@pytest.mark.parametrize("cls", [FrozenEncoder, FullFineTune])
def test_merged_state_dict_without_lora_is_the_state_dict(cls):
    model = fresh_model()
    adapter = cls()
    adapter.apply(model)
    merged = adapter.merged_state_dict(model)
    state = model.state_dict()
    assert list(merged) == list(state)
    assert all(
        torch.equal(merged[k], state[k]) and merged[k].data_ptr() != state[k].data_ptr()
        for k in state
    )


def test_bad_targets_and_double_apply_are_refused():
    with pytest.raises(ValueError, match="matches no"):
        LoRAAdapter(targets=["image_encoder\\.trunk\\.blocks\\.\\d+\\.attn\\.qkv", "proj"]).apply(
            fresh_model()
        )
    with pytest.raises(ValueError, match="video-only"):
        LoRAAdapter(targets=[r"memory_attention\.layers\.\d+\.self_attn\.q_proj"]).apply(
            fresh_model()
        )
    with pytest.raises(ValueError, match="not a valid regex"):
        LoRAAdapter(targets=["image_encoder\\.(trunk"])
    with pytest.raises(ValueError, match="rank"):
        LoRAAdapter(rank=0)
    model = LoRAAdapter().apply(fresh_model())
    with pytest.raises(ValueError, match="already"):
        FrozenEncoder().apply(model)
    with pytest.raises(TypeError, match="SAM 2 model"):
        FrozenEncoder().apply(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("name", "cls", "scale"),
    [("frozen", FrozenEncoder, 1.0), ("lora", LoRAAdapter, 1.0), ("full", FullFineTune, 0.1)],
)
def test_configs_instantiate_and_round_trip(name, cls, scale):
    cfg = OmegaConf.load(REPO / "configs" / "adapter" / f"{name}.yaml")
    adapter = instantiate(cfg)
    assert type(adapter) is cls and adapter.name == name
    assert adapter.encoder_lr_scale == pytest.approx(scale)
    assert cfg._target_ == f"samtune.models.adapters.{cls.__name__}"
    again = instantiate(adapter.hydra_config())
    assert again.hydra_config() == adapter.hydra_config()
    if name == "lora":
        assert (adapter.rank, adapter.alpha, adapter.dropout, adapter.mlp) == (8, 16, 0.0, False)
        assert adapter.targets == [r"image_encoder\.trunk\.blocks\.\d+\.attn\.(qkv|proj)"]
