"""A Roboflow COCO export folder found from its root alone."""

from __future__ import annotations

import numpy as np
import pytest
from data_layouts import write_roboflow_coco

from samtune.data.coco_datamodule import CocoDataModule
from samtune.data.sample import DataError


def test_export_splits_are_found_from_the_root(tmp_path):
    scenes = write_roboflow_coco(tmp_path)
    dm = CocoDataModule(root=tmp_path, image_size=64)
    for split, folder in (("train", "train"), ("val", "valid"), ("test", "test")):
        ds = dm.raw_dataset(split)
        assert len(ds) == len(scenes[folder])
        sample = ds[0]
        scene = scenes[folder][sample.meta["file"].rsplit("/", 1)[-1]]
        assert sample.class_ids.tolist() == scene.classes
        inter = (sample.masks & scene.masks).sum((1, 2))
        union = (sample.masks | scene.masks).sum((1, 2))
        assert np.all(inter / union > 0.9)
        assert sample.meta["class_names"][1] == "nucleus"


def test_export_without_train_or_val_is_explained(tmp_path):
    with pytest.raises(DataError, match=r"train/_annotations\.coco\.json"):
        CocoDataModule(root=tmp_path, image_size=64)
    write_roboflow_coco(tmp_path, {"train": 2})
    with pytest.raises(DataError, match="no val split"):
        CocoDataModule(root=tmp_path, image_size=64)
    dm = CocoDataModule(
        root=tmp_path, val_json=tmp_path / "train" / "_annotations.coco.json", image_size=64
    )
    assert len(dm.raw_dataset("train")) == 2 and len(dm.raw_dataset("val")) == 2
