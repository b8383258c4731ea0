"""Degenerate data is an error or a warning with counts, never "OK"."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from PIL import Image

from samtune.data.datamodules.folder import FolderDataModule
from samtune.data.drops import EmptySplitError
from samtune.data.sample import Sample
from tests.helpers import REPO

CONFIGS = REPO / "samtune" / "configs"


def _folder(root: Path, kind: str, n: int = 4, size: int = 64) -> tuple[Path, Path]:
    """``n`` image/mask pairs: ``empty`` masks hold no object; ``thin`` ones hold two objects one
    pixel wide in even columns, which nearest-neighbour resizing to half the size drops."""
    images, masks = root / kind / "images", root / kind / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        labels = np.zeros((size, size), np.uint8)
        if kind == "thin":
            labels[8:40, 10] = 1
            labels[20:60, 30] = 2
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
            images / f"im{i}.png"
        )
        Image.fromarray(labels).save(masks / f"im{i}.png")
    return images, masks


def _check(images: Path, masks: Path, out: Path, image_size: int):
    from samtune.cli.check_data import task

    overrides = [
        "data=folder",
        f"data.train_images={images}",
        f"data.train_masks={masks}",
        f"model.image_size={image_size}",
    ]
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("check_data", overrides=overrides, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    try:
        task(cfg)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, json.loads((out / "data_check.json").read_text())


def test_check_data_fails_on_all_empty_masks_and_prints_every_drop(tmp_path, capsys):
    images, masks = _folder(tmp_path, "empty")
    code, report = _check(images, masks, tmp_path / "run", 32)
    text = capsys.readouterr().out
    assert code == 1 and report["ok"] is False
    assert "OK" not in text.replace("NO USABLE", "")
    train = report["splits"]["train"]
    assert train["usable_images"] == 0
    assert train["drops"]["dropped_images"] == 4 and train["drops"]["empty_mask_files"] == 4
    for line in (
        "images dropped for having no object: 4",
        "mask files with no object (all background): 4",
        "annotations dropped for an empty mask: 0",
        "images skipped as bad files: 0",
        "objects below 4 px at 32x32 px: 0",
    ):
        assert line in text, line
    assert "the train split has no usable image: 4 mask file(s) hold no object" in text
    assert "the val split has no usable image: it is split off the train folders" in text
    assert "FAILED" in text.splitlines()[-2] and "no usable image in: train, val" in text


def test_check_data_resizes_masks_like_training_so_thin_objects_vanish(tmp_path, capsys):
    images, masks = _folder(tmp_path, "thin")
    code, report = _check(images, masks, tmp_path / "run", 32)
    text = capsys.readouterr().out
    assert code == 1
    train = report["splits"]["train"]
    # 32 and 40 px objects: their areas scaled by (32/64)^2 are 8 and 10, above 4 px, yet
    # resizing the 1-px columns 10 and 30 by nearest neighbour (columns 1, 3, 5 ... kept) leaves 0
    assert train["tiny_masks"] == 2 * train["read"] and train["objects"] == 2 * train["read"]
    assert {t["area_at_image_size"] for t in train["tiny_mask_items"]} == {0}
    assert train["drops"]["tiny_at_image_size"] == train["objects"]
    assert "are below 4 px once resized to 32x32 px" in text
    # at the original size nothing is lost: a warning-free pass
    code_64, report_64 = _check(images, masks, tmp_path / "run64", 64)
    assert code_64 == 0 and report_64["ok"] is True and report_64["warnings"] == []
    assert report_64["splits"]["train"]["usable_images"] == report_64["splits"]["train"]["read"]


def test_lost_data_is_a_warning_with_counts_not_ok(tmp_path):
    from samtune.data.check import check_datamodule, format_check

    images, masks = _folder(tmp_path, "thin", n=3)
    labels = np.zeros((64, 64), np.uint8)
    labels[10:30, 10:30] = 1  # one image with a real object
    Image.fromarray(labels).save(masks / "im0.png")
    dm = FolderDataModule(
        train_images=images, train_masks=masks, val_fraction=0.0, image_size=32, on_error="skip"
    )
    report = check_datamodule(dm, splits=["train"])
    text = format_check(report)
    assert report["ok"] is True
    assert report["warnings"] == [
        "train: 4 objects below 4 px at 32x32 px (dropped in training)",
        "train: 2 image(s) keep no object at 32x32 px",
    ]
    assert text.splitlines()[-3].startswith("WARNINGS: 2 (data lost; usable images: train 1)")
    assert "OK" not in text


def test_empty_split_names_the_split_and_why_instead_of_num_samples(tmp_path):
    images, masks = _folder(tmp_path, "empty", n=3)
    dm = FolderDataModule(train_images=images, train_masks=masks, image_size=32)
    with pytest.raises(EmptySplitError) as err:
        dm.train_dataloader()
    message = str(err.value)
    assert "the train split" in message and str(images) in message
    assert "3 mask file(s) hold no object (all background)" in message
    assert "num_samples" not in message


def test_a_run_that_trains_on_nothing_fails(tmp_path):
    import lightning as L

    from samtune.data.datamodules.synthetic import SyntheticDataModule
    from samtune.models import ModelSpec
    from samtune.models.adapters import FrozenEncoder
    from samtune.prompts import PromptSimulator
    from samtune.training.loss import SAM2Loss
    from samtune.training.module import SamTuneModule
    from samtune.training.optim import OptimConfig

    # every ellipse is far below 10000 px at 64 px: the transform drops all of them
    data = SyntheticDataModule(num_train=2, num_val=1, image_size=64, min_object_area=10_000)
    module = SamTuneModule(
        model=ModelSpec(image_size=64, checkpoint=None),
        adapter=FrozenEncoder(),
        prompts=PromptSimulator(correction_clicks=0),
        loss=SAM2Loss(),
        optim=OptimConfig(),
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match="the train split has no object left at 64x64 px") as err:
        trainer.fit(module, datamodule=data)
    assert "nothing was learned" in str(err.value) and "in 2 image(s)" in str(err.value)


def test_evaluation_drops_and_counts_objects_below_min_object_area(tiny_model, tmp_path):
    from samtune.evaluation import Evaluator
    from samtune.evaluation.report.files import write_results

    image = np.zeros((128, 128, 3), np.uint8)
    big = np.zeros((128, 128), bool)
    big[20:70, 20:70] = True
    small = np.zeros((128, 128), bool)
    small[100:102, 100:102] = True  # 4 px at the model's 128 px
    sample = Sample(image=image, masks=np.stack([big, small]), meta={"file": "a.png"})
    evaluator = Evaluator(protocols=["point1"], progress=False, gallery_size=1)
    kept = evaluator.evaluate(tiny_model, [sample], min_object_area=4)
    assert kept.dropped_small == 0 and len(kept.rows) == 2
    result = evaluator.evaluate(tiny_model, [sample], min_object_area=5)
    assert result.dropped_small == 1 and [r.object for r in result.rows] == [0]
    files = write_results(result, tmp_path, summary={"model": "m", "image_size": 128})
    counts = json.loads(files["results"].read_text())["counts"]
    assert counts["dropped_small_objects"] == 1 and counts["min_object_area"] == 5
    assert "1 object(s) below data.min_object_area=5 px at 128 px" in files["report_md"].read_text()
