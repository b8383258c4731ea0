"""Small checkpoints: frozen and lora runs store the trained weights and a verified reference to
the base weights; export and loading rebuild exactly the tuned model."""

from __future__ import annotations

import shutil

import pytest
import torch

from samtune.models import CheckpointError
from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter
from samtune.models.base_ref import build_random_init, state_digest
from samtune.models.official import sha256_of
from samtune.models.weights import model_from_training_checkpoint, safe_load
from tests.helpers import SMALL_SIZE
from tests.models.helpers import make_module, save_module_checkpoint

NAME = "sam2.1_hiera_tiny"


@pytest.mark.parametrize(
    "adapter",
    [FrozenEncoder(), pytest.param(LoRAAdapter(rank=2), marks=pytest.mark.slow)],
    ids=lambda a: a.name,
)
def test_small_checkpoint_round_trip(tmp_path, tiny_checkpoint, adapter):
    module = make_module(adapter, str(tiny_checkpoint))
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    stored = {k.removeprefix("model.") for k in ckpt["state_dict"] if k.startswith("model.")}
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in module.model.named_parameters() if not p.requires_grad}
    assert trainable <= stored and not (frozen & stored)
    base = ckpt["samtune"]["base"]
    assert base["file"] == tiny_checkpoint.name and base["sha256"] == sha256_of(tiny_checkpoint)

    model, info = model_from_training_checkpoint(tmp_path / "run.ckpt")
    expected = module.adapter.merged_state_dict(module.model)
    got = model.state_dict()
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)

    # the module gets its frozen weights back when Lightning (or the evaluation) reloads it
    fresh = make_module(adapter.__class__(**adapter._init_kwargs()), str(tiny_checkpoint))
    loaded = safe_load(tmp_path / "run.ckpt")
    fresh.on_load_checkpoint(loaded)
    fresh.load_state_dict(loaded["state_dict"], strict=True)


def test_changed_base_weights_are_refused(tmp_path, tiny_checkpoint):
    module = make_module(FrozenEncoder(), str(tiny_checkpoint))
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    other = tmp_path / "other" / tiny_checkpoint.name
    other.parent.mkdir()
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["model"]["no_mem_embed"] = state["model"]["no_mem_embed"] + 1
    torch.save(state, other)
    ckpt["samtune"]["base"]["path"] = str(other)
    torch.save(ckpt, tmp_path / "moved.ckpt")
    with pytest.raises(
        CheckpointError, match="moved.ckpt was trained on base weights .*not the same"
    ):
        model_from_training_checkpoint(tmp_path / "moved.ckpt")
    ckpt["samtune"]["base"]["path"] = str(tmp_path / "gone.pt")
    ckpt["samtune"]["base"]["file"] = "gone.pt"
    torch.save(ckpt, tmp_path / "lost.ckpt")
    with pytest.raises(
        CheckpointError, match="lost.ckpt holds only the trained weights; .*gone.pt"
    ):
        model_from_training_checkpoint(tmp_path / "lost.ckpt")


def test_random_init_is_rebuilt_from_its_seed(tmp_path):
    module = make_module(FrozenEncoder(), None, init_seed=7)
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    base = ckpt["samtune"]["base"]
    assert base == {
        "random_init": True,
        "seed": 7,
        "digest": state_digest(build_random_init(NAME, image_size=SMALL_SIZE, seed=7).state_dict()),
        "torch": torch.__version__.split("+")[0],
    }
    assert base["digest"] != state_digest(
        build_random_init(NAME, image_size=SMALL_SIZE, seed=8).state_dict()
    )
    assert ckpt["samtune"]["model"]["init_digest"] == base["digest"]
    model, _ = model_from_training_checkpoint(tmp_path / "run.ckpt")
    expected = module.adapter.merged_state_dict(module.model)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=0, rtol=0)


def test_full_fine_tuning_stores_everything(tmp_path, tiny_checkpoint):
    module = make_module(FullFineTune(), str(tiny_checkpoint))
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    assert "base" not in ckpt["samtune"]
    assert {f"model.{k}" for k in module.model.state_dict()} <= set(ckpt["state_dict"])
    shutil.rmtree(tmp_path)
