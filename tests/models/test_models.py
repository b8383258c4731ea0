"""Model registry, building the real sam2 architecture, strict checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from samtune.models import (
    MODELS,
    CheckpointError,
    ModelSpec,
    build_sam2_model,
    guess_size_from_state_dict,
    read_state_dict,
)


def test_registry_names_official_configs():
    from samtune.models.build import sam2_config_path

    assert set(MODELS) == {
        "sam2.1_hiera_tiny",
        "sam2.1_hiera_small",
        "sam2.1_hiera_base_plus",
        "sam2.1_hiera_large",
    }
    for info in MODELS.values():
        assert sam2_config_path(info.sam2_config).is_file()
        assert info.url.endswith(info.checkpoint_file)


def test_build_at_small_size_runs_encoder(tiny_model):
    assert tiny_model.image_size == 128
    with torch.no_grad():
        out = tiny_model.forward_image(torch.zeros(1, 3, 128, 128))
    assert [tuple(f.shape[-2:]) for f in out["backbone_fpn"]] == [(32, 32), (16, 16), (8, 8)]
    # the same post-processing switches as sam2.build_sam.build_sam2
    assert tiny_model.sam_mask_decoder.dynamic_multimask_via_stability is True


def test_image_size_must_be_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_sam2_model("sam2.1_hiera_tiny", image_size=100)


def test_unknown_model_name_lists_known():
    with pytest.raises(KeyError, match="sam2.1_hiera_large"):
        ModelSpec(name="sam2.1_hiera_huge")


def test_checkpoint_loads_strictly_and_exactly(tiny_checkpoint, tiny_state_dict):
    model = build_sam2_model("sam2.1_hiera_tiny", image_size=128, checkpoint=tiny_checkpoint)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state_dict[k]), k


def test_guess_size(tiny_state_dict):
    assert guess_size_from_state_dict(tiny_state_dict) == "sam2.1_hiera_tiny"
    assert guess_size_from_state_dict({"foo": torch.zeros(1)}) is None


def test_wrong_size_checkpoint_names_both_sizes(tiny_checkpoint):
    with pytest.raises(CheckpointError) as err:
        build_sam2_model("sam2.1_hiera_small", image_size=128, checkpoint=tiny_checkpoint)
    msg = str(err.value)
    assert (
        "sam2.1_hiera_tiny" in msg and "sam2.1_hiera_small" in msg and str(tiny_checkpoint) in msg
    )


def test_missing_and_unexpected_keys_fail(tmp_path, tiny_state_dict):
    sd = dict(tiny_state_dict)
    sd.pop("sam_mask_decoder.iou_token.weight")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match="1 missing keys.*1 unexpected keys"):
        build_sam2_model("sam2.1_hiera_tiny", image_size=128, checkpoint=path)


def test_not_sam2_format_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"weights\.pt.*'model'"):
        read_state_dict(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*garbage.pt"):
        read_state_dict(garbage)


def test_spec_null_checkpoint_is_random_init_and_says_so(caplog):
    spec = ModelSpec(name="sam2.1_hiera_tiny", image_size=128, checkpoint=None)
    with caplog.at_level("WARNING", logger="samtune.models.spec"):
        model = spec.build()
    assert spec.random_init and spec.resolved_checkpoint is None
    assert "RANDOM WEIGHTS" in caplog.text
    assert model.image_size == 128
