"""Export: Lightning checkpoint -> official SAM 2 checkpoint, loaded by sam2 alone."""

from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from samtune import load_predictor
from samtune.models import CheckpointError, build_sam2_model
from samtune.models.adapters import FrozenEncoder, FullFineTune, LoRAAdapter
from samtune.models.export import export_checkpoint, model_from_lightning_checkpoint, sidecar_path
from tests.helpers import REPO, SMALL_SIZE, make_blob_sample
from tests.models.helpers import (
    BOX,
    LABELS,
    NAME,
    POINTS,
    SAM2_CONFIG,
    assert_same_predictions,
    make_lightning_checkpoint,
    run_prompts,
)


@pytest.mark.parametrize(
    "adapter", [LoRAAdapter(rank=4), FrozenEncoder(), FullFineTune()], ids=lambda a: a.name
)
def test_model_from_lightning_checkpoint_is_the_merged_model(tmp_path, adapter):
    ckpt = tmp_path / "run.ckpt"
    adapted = make_lightning_checkpoint(ckpt, adapter)
    model, info = model_from_lightning_checkpoint(ckpt)
    expected = adapter.merged_state_dict(adapted)
    state = model.state_dict()
    assert type(model).__name__ == "SAM2Base" and list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in state)
    assert (
        info["name"] == NAME
        and info["image_size"] == SMALL_SIZE
        and info["adapter"] == adapter.name
    )
    assert info["metrics"] == {"val/miou": 0.5, "val/dice": 0.6} and info["random_init"] is True


def test_export_writes_official_checkpoint_and_sidecar(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    adapted = make_lightning_checkpoint(ckpt, LoRAAdapter(rank=4))
    out = export_checkpoint(ckpt, tmp_path / "out" / "tuned.pt")
    assert out == tmp_path / "out" / "tuned.pt"
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "tuned.json",
        "tuned.pt",
    ]  # no temp files
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert list(obj) == ["model", "samtune"]
    assert obj["samtune"]["image_size"] == SMALL_SIZE and obj["samtune"]["random_init"] is True
    assert list(obj["model"]) == list(build_sam2_model(NAME, image_size=SMALL_SIZE).state_dict())
    path = "image_encoder.trunk.blocks.2.attn.proj"
    ref = adapted.state_dict()
    w = (
        ref[f"{path}.base_layer.weight"]
        + (16 / 4) * ref[f"{path}.lora_B.default.weight"] @ ref[f"{path}.lora_A.default.weight"]
    )
    torch.testing.assert_close(obj["model"][f"{path}.weight"], w, rtol=0, atol=1e-6)

    side = json.loads(sidecar_path(out).read_text())
    assert side["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (side["model"], side["sam2_config"], side["image_size"]) == (
        NAME,
        SAM2_CONFIG,
        SMALL_SIZE,
    )
    assert (side["adapter"], side["data"], side["random_init"]) == ("lora", "nuclei_mini", True)
    assert side["metrics"]["val/miou"] == pytest.approx(0.5)
    assert side["samtune_version"] == "0.1.0" and side["adapter_config"]["rank"] == 4


def test_export_cli(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    make_lightning_checkpoint(ckpt, FrozenEncoder())
    out = tmp_path / "exported"
    out.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "samtune.cli.export",
            f"ckpt={ckpt}",
            f"out={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "run.pt").is_file() and (out / "run.json").is_file()
    state = torch.load(out / "run.pt", weights_only=True)["model"]
    assert len(state) == len(build_sam2_model(NAME, image_size=SMALL_SIZE).state_dict())


def test_bad_checkpoints_are_named(tmp_path):
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, plain)
    with pytest.raises(CheckpointError, match="plain.ckpt.*no samtune metadata"):
        model_from_lightning_checkpoint(plain)
    ckpt = tmp_path / "run.ckpt"
    make_lightning_checkpoint(ckpt, FrozenEncoder())
    obj = torch.load(ckpt, weights_only=True)
    obj["samtune"]["model"]["name"] = "sam2.1_hiera_small"
    torch.save(obj, tmp_path / "small.ckpt")
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.*sam2.1_hiera_small"):
        model_from_lightning_checkpoint(tmp_path / "small.ckpt")
    obj["samtune"]["model"]["name"] = NAME
    del obj["state_dict"]["model.sam_mask_decoder.iou_token.weight"]
    torch.save(obj, tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="missing.ckpt.*1 missing keys"):
        model_from_lightning_checkpoint(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="must end in .pt"):
        export_checkpoint(ckpt, tmp_path / "weights.bin")


# Runs in a fresh interpreter that never imports samtune: only sam2's own API.
# argv: sam2 config, image .npz, threads, helper folder, exported .pt files...
OFFICIAL_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    torch.set_num_threads(int(sys.argv[3]))
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    sys.path.insert(0, sys.argv[4])
    from _prompts import run_prompts
    image = np.load(sys.argv[2])["image"]
    for path in sys.argv[5:]:
        model = build_sam2(sys.argv[1], path, device="cpu")
        out = run_prompts(SAM2ImagePredictor(model), image)
        np.savez(path.replace(".pt", "_official.npz"), **out)
    assert not any(m == "samtune" or m.startswith("samtune.") for m in sys.modules), "samtune imported"
    """
)


def test_export_round_trip_in_official_sam2_at_1024(tmp_path):
    """Exported LoRA and frozen-encoder models load with sam2's build_sam2 (strict, no samtune)
    and predict exactly what samtune predicted from the Lightning checkpoints."""

    image = make_blob_sample().image
    data = tmp_path / "image.npz"
    np.savez(data, image=image)
    # the prompt code for the samtune-free interpreter: the same function, on both sides
    helper = tmp_path / "helper"
    helper.mkdir()
    (helper / "_prompts.py").write_text(
        "import numpy as np\n\n"
        f"POINTS = np.array({POINTS.tolist()})\n"
        f"LABELS = np.array({LABELS.tolist()})\n"
        f"BOX = np.array({BOX.tolist()})\n\n\n" + inspect.getsource(run_prompts)
    )
    ckpts, exported = [], []
    for adapter in (LoRAAdapter(rank=4), FrozenEncoder()):
        ckpt = tmp_path / f"{adapter.name}.ckpt"
        make_lightning_checkpoint(ckpt, adapter, image_size=1024)
        out = export_checkpoint(ckpt, tmp_path / f"{adapter.name}.pt")
        assert json.loads(sidecar_path(out).read_text())["sam2_config"] == SAM2_CONFIG
        ckpts.append(ckpt)
        exported.append(out)
    # sam2 alone in a fresh interpreter, while samtune predicts here: one thread each, so that
    # both sides run the same kernels and the two cores are used without oversubscription
    threads = torch.get_num_threads()
    args = [SAM2_CONFIG, str(data), "1", str(helper), *map(str, exported)]
    proc = subprocess.Popen(
        [sys.executable, "-c", OFFICIAL_SCRIPT, *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        torch.set_num_threads(1)
        ours = [run_prompts(load_predictor(str(ckpt)), image) for ckpt in ckpts]
    finally:
        torch.set_num_threads(threads)
        _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    for out, mine in zip(exported, ours, strict=True):
        official = dict(np.load(str(out).replace(".pt", "_official.npz")))
        assert_same_predictions(official, mine)
        # the prompts gave different masks, so the comparison has teeth
        assert not np.array_equal(mine["points_masks"][0], mine["box_masks"][0])
    assert not np.array_equal(ours[0]["box_masks"], ours[1]["box_masks"])  # two different models


def test_export_roboflow_package(tmp_path, caplog):
    """format=roboflow: a folder with model.pt (the official format) and sam_configuration.json
    naming the sam2 config Roboflow's runtime builds (a 128 px model is exported with a warning)."""
    from samtune.models.build import sam2_config_path
    from samtune.models.export import export_roboflow

    ckpt = tmp_path / "run.ckpt"
    adapted = make_lightning_checkpoint(ckpt, FullFineTune())
    with caplog.at_level("WARNING", logger="samtune.models.export"):
        folder = export_roboflow(ckpt, tmp_path / "rf")
    assert sorted(p.name for p in folder.iterdir()) == [
        "model.json",
        "model.pt",
        "sam_configuration.json",
    ]
    config = json.loads((folder / "sam_configuration.json").read_text())
    assert config == {"version": "sam2.1_hiera_t"}
    assert sam2_config_path(f"configs/sam2.1/{config['version']}.yaml").is_file()
    obj = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    assert (obj["samtune"]["image_size"], obj["samtune"]["adapter"]) == (SMALL_SIZE, "full")
    state = obj["model"]
    expected = FullFineTune().merged_state_dict(adapted)
    assert list(state) == list(expected) and all(torch.equal(state[k], expected[k]) for k in state)
    assert "1024" in caplog.text and "128" in caplog.text
    with pytest.raises(ValueError, match="folder"):
        export_roboflow(ckpt, folder / "model.pt")
