"""YOLO segmentation exports (Ultralytics and Roboflow layouts)."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datamodules.yolo import YoloDataModule
from samtune.data.datasets.base import DataSkipWarning
from samtune.data.sample import DataError
from tests.data.layouts import YOLO_NAMES, write_yolo


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("roboflow", [False, True])
def test_polygons_become_masks_with_class_names(tmp_path, roboflow):
    scenes = write_yolo(tmp_path, {"train": 3, "val": 2, "test": 1}, roboflow=roboflow)
    dm = YoloDataModule(root=tmp_path, image_size=64)
    for split in ("train", "val", "test"):
        ds = dm.raw_dataset(split)
        assert len(ds) == len(scenes[split])
        for i in range(len(ds)):
            sample = ds[i]
            scene = scenes[split][sample.meta["image_id"]]
            assert sample.class_ids.tolist() == scene.classes
            for got, truth in zip(sample.masks, scene.masks, strict=True):
                assert _iou(got, truth) > 0.9  # 6-digit normalised coordinates, re-rasterised
            assert sample.meta["class_names"] == {1: "nucleus", 2: "cytoplasm"}
    assert dm.names == YOLO_NAMES


def test_bad_label_lines_are_named_boxes_counted_and_val_split_off(tmp_path):
    write_yolo(tmp_path, {"train": 5})
    labels = tmp_path / "labels" / "train"
    with open(labels / "train_0.txt", "a") as handle:
        handle.write("1 0.5 0.5 0.2 0.2\n")  # a detection box
    (labels / "train_1.txt").write_text("7 0.1 0.1 0.2 0.1 0.2 0.2\n")
    (labels / "train_2.txt").write_text("0 0.1 0.1 0.2\n")
    (labels / "train_3.txt").unlink()
    with pytest.raises(DataError, match=r"train_1\.txt:1: class 7 is not one of the 2 classes"):
        YoloDataModule(root=tmp_path, image_size=64).raw_dataset("train")
    dm = YoloDataModule(root=tmp_path, image_size=64, on_error="skip", val_fraction=0.5)
    with pytest.warns(DataSkipWarning):
        train = dm.raw_dataset("train")
    stats = train.stats
    assert stats["boxes_ignored"] == 1 and stats["unlabelled"] == 1 and stats["skipped"] == 2
    assert stats["dropped_images"] == 1  # the unlabelled image
    reasons = " ".join(r for _, r in train.skipped)
    assert "train_2.txt:1: a polygon needs an even number" in reasons
    assert len(train) + len(dm.raw_dataset("val")) == 2


def test_missing_yaml_or_split_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="no data.yaml"):
        YoloDataModule(root=tmp_path, image_size=64)
    write_yolo(tmp_path, {"train": 1, "val": 1})
    import shutil

    shutil.rmtree(tmp_path / "images" / "val")
    with pytest.raises(
        DataError, match=r"data\.yaml: the val images folder 'images/val' was not found"
    ):
        YoloDataModule(root=tmp_path, image_size=64)
