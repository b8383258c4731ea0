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
    dm = YoloDataModule(root=tmp_path, image_size=64)  # the yaml is fine; val is not on disk
    with pytest.raises(DataError) as err:
        dm.raw_dataset("val")
    message = str(err.value)
    assert "data.yaml: the val images folder 'images/val' (val:) was not found" in message
    assert str(tmp_path / "images" / "val") in message  # where it looked
    assert len(dm.raw_dataset("train")) == 1  # the split that is there still reads


def test_splits_given_as_txt_image_lists(tmp_path):
    scenes = write_yolo(tmp_path, {"train": 3, "val": 2})
    (tmp_path / "train.txt").write_text(
        "# images of the train split\n./images/train/train_0.png\n\nimages/train/train_2.png\n"
    )
    (tmp_path / "val.txt").write_text(
        "\n".join(str(p) for p in sorted((tmp_path / "images" / "val").iterdir())) + "\n"
    )
    yaml_file = tmp_path / "data.yaml"
    text = (
        yaml_file.read_text().replace("images/train", "train.txt").replace("images/val", "val.txt")
    )
    yaml_file.write_text(text)
    dm = YoloDataModule(root=tmp_path, image_size=64)
    train = dm.raw_dataset("train")
    assert sorted(train[i].meta["image_id"] for i in range(len(train))) == ["train_0", "train_2"]
    sample = train[0]
    truth = scenes["train"][sample.meta["image_id"]]
    assert sample.class_ids.tolist() == truth.classes
    assert len(dm.raw_dataset("val")) == 2

    (tmp_path / "train.txt").write_text("./images/train/train_0.png\n./images/train/gone.png\n")
    with pytest.raises(
        DataError, match=r"train\.txt:2: listed image './images/train/gone\.png' not found"
    ):
        YoloDataModule(root=tmp_path, image_size=64).raw_dataset("train")
    (tmp_path / "train.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match=r"train\.txt: the image list names no image"):
        YoloDataModule(root=tmp_path, image_size=64).raw_dataset("train")
    (tmp_path / "train.txt").unlink()
    with pytest.raises(DataError, match=r"the train image list 'train\.txt' \(train:\) was not"):
        YoloDataModule(root=tmp_path, image_size=64).raw_dataset("train")
