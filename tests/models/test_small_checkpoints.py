"""Small checkpoints: frozen and lora runs store the trained weights and a verified reference to
the base weights; export and loading rebuild exactly the tuned model."""

from __future__ import annotations

import shutil

import pytest
import torch

from samtune.models import CheckpointError, ModelSpec
from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter
from samtune.models.base_ref import build_random_init, state_digest
from samtune.models.official import sha256_of
from samtune.models.weights import model_from_training_checkpoint, safe_load
from tests.helpers import SMALL_SIZE

NAME = "sam2.1_hiera_tiny"


def _module(adapter, checkpoint, init_seed: int = 0):
    from samtune.prompts import PromptSimulator
    from samtune.training.loss import SAM2Loss
    from samtune.training.module import SamTuneModule
    from samtune.training.optim import OptimConfig

    spec = ModelSpec(NAME, image_size=SMALL_SIZE, checkpoint=checkpoint, init_seed=init_seed)
    module = SamTuneModule(
        model=spec,
        adapter=adapter,
        prompts=PromptSimulator(),
        loss=SAM2Loss(),
        optim=OptimConfig(),
        run_info={"adapter": adapter.hydra_config()},
    )
    with torch.no_grad():  # "training": change what trains
        for p in module.model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    return module


def _save(module, path) -> dict:
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return checkpoint


@pytest.mark.parametrize(
    "adapter",
    [FrozenEncoder(), pytest.param(LoRAAdapter(rank=2), marks=pytest.mark.slow)],
    ids=lambda a: a.name,
)
def test_small_checkpoint_round_trip(tmp_path, tiny_checkpoint, adapter):
    module = _module(adapter, str(tiny_checkpoint))
    ckpt = _save(module, tmp_path / "run.ckpt")
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
    fresh = _module(adapter.__class__(**adapter._init_kwargs()), str(tiny_checkpoint))
    loaded = safe_load(tmp_path / "run.ckpt")
    fresh.on_load_checkpoint(loaded)
    fresh.load_state_dict(loaded["state_dict"], strict=True)


def test_changed_base_weights_are_refused(tmp_path, tiny_checkpoint):
    module = _module(FrozenEncoder(), str(tiny_checkpoint))
    ckpt = _save(module, tmp_path / "run.ckpt")
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
    module = _module(FrozenEncoder(), None, init_seed=7)
    ckpt = _save(module, tmp_path / "run.ckpt")
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
    module = _module(FullFineTune(), str(tiny_checkpoint))
    ckpt = _save(module, tmp_path / "run.ckpt")
    assert "base" not in ckpt["samtune"]
    assert {f"model.{k}" for k in module.model.state_dict()} <= set(ckpt["state_dict"])
    shutil.rmtree(tmp_path)
