"""A Roboflow COCO export folder found from its root alone."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datamodules.coco import CocoDataModule
from samtune.data.sample import DataError
from tests.data.layouts import write_roboflow_coco


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
    dm = CocoDataModule(root=tmp_path, image_size=64)
    assert len(dm.raw_dataset("train")) == 2
    with pytest.raises(ValueError, match=r"has no valid/val folder with _annotations\.coco\.json"):
        dm.raw_dataset("val")
    json_file = tmp_path / "train" / "_annotations.coco.json"
    plain = CocoDataModule(
        root=tmp_path / "train", train_json=json_file, val_json=json_file, image_size=64
    )
    assert len(plain.raw_dataset("val")) == 2  # jsons given: the usual COCO reading
