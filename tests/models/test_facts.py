"""The weights carry their facts: an exported ``.pt`` loads as tuned without its sidecar, and a
random-init base is pinned by a digest of its weights, checked when it is rebuilt."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from samtune.models import CheckpointError, ModelSpec
from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter
from samtune.models.base_ref import build_random_init, state_digest
from samtune.models.export import export_checkpoint, sidecar_path
from samtune.models.weights import load_model, model_from_training_checkpoint, safe_load
from tests.helpers import SMALL_SIZE
from tests.models.helpers import (
    NAME,
    SAM2_CONFIG,
    make_lightning_checkpoint,
    make_module,
    save_module_checkpoint,
)

FAKE_DIGEST = "blake2b-256:" + "0" * 64


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_without_its_sidecar_loads_as_tuned(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    make_lightning_checkpoint(ckpt, FrozenEncoder())
    tuned, _ = model_from_training_checkpoint(ckpt)
    out = export_checkpoint(ckpt, tmp_path / "tuned.pt")
    facts = torch.load(out, map_location="cpu", weights_only=True)["samtune"]
    assert (facts["model"], facts["sam2_config"], facts["image_size"]) == (
        NAME,
        SAM2_CONFIG,
        SMALL_SIZE,
    )
    assert (facts["adapter"], facts["random_init"], facts["format"]) == ("frozen", True, 1)
    with_sidecar = load_model(out)[1]

    sidecar_path(out).unlink()
    # the spec's resolution is only a fallback: the file's facts say 128 px
    model, info = load_model(out, ModelSpec(NAME, image_size=1024))
    assert info == with_sidecar
    assert (info["name"], info["image_size"], info["adapter"], info["random_init"]) == (
        NAME,
        SMALL_SIZE,
        "frozen",
        True,
    )
    assert model.image_size == SMALL_SIZE and _same_state(model.state_dict(), tuned.state_dict())

    # the same weights without the facts: nothing says 128 px or random init any more
    bare = tmp_path / "bare.pt"
    torch.save({"model": torch.load(out, weights_only=True)["model"]}, bare)
    _, info = load_model(bare)
    assert (info["image_size"], info["adapter"], info["random_init"]) == (1024, None, False)


def test_sidecar_that_disagrees_with_the_file_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    make_lightning_checkpoint(ckpt, FrozenEncoder())
    out = export_checkpoint(ckpt, tmp_path / "tuned.pt")
    side = json.loads(sidecar_path(out).read_text())
    side["image_size"], side["random_init"] = 256, False  # edited by hand: the .pt is unchanged
    sidecar_path(out).write_text(json.dumps(side))
    with pytest.raises(
        CheckpointError,
        match=r"tuned.pt and its sidecar .*tuned.json disagree \(image_size: 128 in the file, "
        r"256 in the sidecar; random_init: True in the file, False in the sidecar\)",
    ):
        load_model(out)

    obj = torch.load(out, weights_only=True)
    obj["samtune"] = "tiny at 128 px"
    torch.save(obj, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"odd.pt: \['samtune'\] is not samtune's export"):
        load_model(tmp_path / "odd.pt")


def test_official_build_sam2_loads_the_export_at_small_size(tmp_path):
    from hydra import initialize_config_module
    from sam2.build_sam import build_sam2

    ckpt = tmp_path / "run.ckpt"
    make_lightning_checkpoint(ckpt, LoRAAdapter(rank=4))
    out = export_checkpoint(ckpt, tmp_path / "tuned.pt")
    assert set(torch.load(out, weights_only=True)) == {"model", "samtune"}
    initialize_config_module("sam2", version_base="1.2")  # what `import sam2` does
    model = build_sam2(
        SAM2_CONFIG,
        str(out),
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )
    assert model.image_size == SMALL_SIZE
    assert _same_state(model.state_dict(), load_model(out)[0].state_dict())


def test_random_init_digest_is_recorded_exported_and_checked(tmp_path, caplog):
    digest = state_digest(build_random_init(NAME, image_size=SMALL_SIZE, seed=5).state_dict())
    module = make_module(FrozenEncoder(), None, init_seed=5)
    assert module.spec.init_digest == digest
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    assert ckpt["samtune"]["base"]["digest"] == digest
    assert ckpt["samtune"]["model"]["init_digest"] == digest
    out = export_checkpoint(tmp_path / "run.ckpt", tmp_path / "run.pt")
    facts = torch.load(out, weights_only=True)["samtune"]
    assert facts["base"]["digest"] == digest and facts["base"]["seed"] == 5
    assert json.loads(sidecar_path(out).read_text())["base"] == facts["base"]

    # weights drawn from the same seed that are not the ones the run trained on
    ckpt["samtune"]["base"]["digest"] = FAKE_DIGEST
    torch.save(ckpt, tmp_path / "other.ckpt")
    both = rf"other.ckpt: the random base weights rebuilt from seed 5 have digest {digest}, but "
    both += rf"the run trained on weights with digest {FAKE_DIGEST}"
    with pytest.raises(CheckpointError, match=both):
        model_from_training_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=FAKE_DIGEST):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()
    fresh = make_module(FrozenEncoder(), None, init_seed=5)  # a resumed run
    with pytest.raises(CheckpointError, match=rf"digest {digest}, but .*digest {FAKE_DIGEST}"):
        fresh.on_load_checkpoint(safe_load(tmp_path / "other.ckpt"))

    # a checkpoint written before digests were recorded still loads, with a note
    del ckpt["samtune"]["base"]["digest"], ckpt["samtune"]["base"]["torch"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    with caplog.at_level(logging.INFO, logger="samtune.models.base_ref"):
        model, _ = model_from_training_checkpoint(tmp_path / "old.ckpt")
    assert "old.ckpt records its random-init base weights by seed 5 only" in caplog.text
    expected = module.adapter.merged_state_dict(module.model)
    assert _same_state(model.state_dict(), expected)
    fresh.on_load_checkpoint(safe_load(tmp_path / "old.ckpt"))


def test_full_fine_tuning_from_random_init_records_the_digest(tmp_path):
    module = make_module(FullFineTune(), None, init_seed=3)
    ckpt = save_module_checkpoint(module, tmp_path / "run.ckpt")
    digest = ckpt["samtune"]["model"]["init_digest"]
    assert "base" not in ckpt["samtune"] and ckpt["samtune"]["model"]["init_seed"] == 3
    assert digest == state_digest(build_random_init(NAME, image_size=64, seed=3).state_dict())
    assert digest != state_digest(module.model.state_dict())  # the trained weights differ
    out = export_checkpoint(tmp_path / "run.ckpt", tmp_path / "run.pt")
    base = torch.load(out, weights_only=True)["samtune"]["base"]
    assert base == {"random_init": True, "seed": 3, "digest": digest}
