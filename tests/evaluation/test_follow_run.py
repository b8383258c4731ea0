"""samtune-eval follows the run: the checkpoint a run folder names, the recorded data config and
the command line's part in it, the recorded target's check, and the overlap with training."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from samtune.evaluation.follow_run import (
    FROM_COMMAND_LINE,
    FROM_RUN,
    FROM_RUN_AND_COMMAND_LINE,
    TrainingOverlapError,
    TrainingRecord,
    check_data_config,
    eval_data_config,
    overlap_with_training,
    read_training_record,
    run_checkpoint,
)
from samtune.models.state_dicts import CheckpointError

RECORDED = {
    "_target_": "samtune.data.FolderDataModule",
    "train_images": "/data/images",
    "train_masks": "/data/masks",
    "val_fraction": 0.3,
    "seed": 3,
    "image_size": 256,
    "augment": {"hflip": 0.5},
}


def _record(data=RECORDED) -> TrainingRecord:
    return TrainingRecord("run/checkpoints/last.ckpt", 24, data, "folder(/data/images)", "ckpt")


def test_a_run_folder_names_its_best_then_its_last_checkpoint(tmp_path, caplog):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="without checkpoints/best.ckpt or checkpoints/last"):
        run_checkpoint(tmp_path / "run")
    (ckpts / "last.ckpt").write_bytes(b"x")
    with caplog.at_level(logging.INFO):
        assert run_checkpoint(tmp_path / "run") == ckpts / "last.ckpt"
    assert "no best.ckpt" in caplog.text
    (ckpts / "best.ckpt").write_bytes(b"x")
    assert run_checkpoint(tmp_path / "run") == ckpts / "best.ckpt"
    assert run_checkpoint(ckpts) == ckpts / "best.ckpt"
    assert run_checkpoint(ckpts / "last.ckpt") == ckpts / "last.ckpt"  # a file as it is
    with pytest.raises(CheckpointError, match="no such checkpoint file or run folder"):
        run_checkpoint(tmp_path / "elsewhere")


def test_the_recorded_data_config_unless_the_command_line_names_data():
    composed = OmegaConf.create({"_target_": "samtune.data.NucleiMiniDataModule", "seed": 7})
    data, source = eval_data_config(composed, _record(), set(), image_size=512)
    assert source == FROM_RUN
    assert data.train_images == "/data/images" and data.val_fraction == 0.3 and data.seed == 3
    assert data.image_size == 512  # the data follow the model's size
    # data.<key>= changes that key of the record (an explicit value beats a recorded one)
    data, source = eval_data_config(composed, _record(), {"data.seed", "ckpt"}, image_size=256)
    assert source == FROM_RUN_AND_COMMAND_LINE and data.seed == 7 and data.val_fraction == 0.3
    explicit = OmegaConf.create({"image_size": 1024})
    data, _ = eval_data_config(explicit, _record(), {"data.image_size"}, image_size=256)
    assert data.image_size == 1024
    # data= starts from this command's own data config; so does weights of no run
    assert eval_data_config(composed, _record(), {"data", "data.seed"}, 256) == (
        composed,
        FROM_COMMAND_LINE,
    )
    assert eval_data_config(composed, None, set(), 256) == (composed, FROM_COMMAND_LINE)
    assert eval_data_config(composed, _record(None), set(), 256) == (composed, FROM_COMMAND_LINE)


def test_a_recorded_data_target_outside_samtune_is_refused():
    check_data_config(RECORDED, "ckpt")
    for bad, why in (
        ({**RECORDED, "_target_": "os.system"}, "not one of samtune's datamodules"),
        ({**RECORDED, "_target_": "samtune.data.SampleDataset"}, "not a datamodule"),
        ({**RECORDED, "augment": {"_target_": "os.system"}}, "data.augment._target_"),
    ):
        with pytest.raises(CheckpointError, match=why):
            eval_data_config(OmegaConf.create({}), _record(bad), set(), 256)


def test_overlap_with_training_stops_with_the_count_or_warns(caplog):
    train = [f"/d/im{i}.png" for i in range(10)]
    evaluated = ["/d/im3.png", "/d/im4.png", "/d/other.png"]
    with pytest.raises(TrainingOverlapError, match=r"2 of the 3 image\(s\) .*'val'.*im3.png, im4"):
        overlap_with_training(evaluated, train, split="val", allow=False)
    found = overlap_with_training(evaluated, train, split="val", allow=True)
    assert found == {"images": 3, "overlap": 2, "examples": ["/d/im3.png", "/d/im4.png"]}
    assert "allow_overlap=true" in caplog.text
    many = overlap_with_training(train, train, split="train", allow=True)
    assert many["overlap"] == 10 and len(many["examples"]) == 5
    assert overlap_with_training(["/d/x.png"], train, split="val", allow=False)["overlap"] == 0


def test_the_record_is_read_from_the_checkpoint_else_the_run_folder(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    ckpts.mkdir(parents=True)
    meta = {"model": {"name": "sam2.1_hiera_tiny", "image_size": 128}, "adapter": {}}
    torch.save(
        {"state_dict": {}, "global_step": 5, "samtune": {**meta, "config": {"data": RECORDED}}},
        ckpts / "a.ckpt",
    )
    record = read_training_record(ckpts / "a.ckpt")
    assert record.global_step == 5 and record.data == RECORDED
    torch.save({"state_dict": {}, "global_step": 6, "samtune": meta}, ckpts / "b.ckpt")
    assert read_training_record(ckpts / "b.ckpt").data is None
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text(
        "model: {image_size: 64}\ndata: {_target_: samtune.data.SyntheticDataModule, "
        "image_size: '${model.image_size}', seed: 2}\n"
    )
    record = read_training_record(ckpts / "b.ckpt")
    assert record.data == {
        "_target_": "samtune.data.SyntheticDataModule",
        "image_size": 64,
        "seed": 2,
    }
    assert record.data_source.endswith(".hydra/config.yaml")
