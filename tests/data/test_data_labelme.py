"""LabelMe folders: polygons, groups, ignored shapes, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from samtune.data.datamodules.labelme import LabelMeDataModule
from samtune.data.datasets.base import DataSkipWarning
from samtune.data.sample import DataError
from tests.data.layouts import YOLO_NAMES, write_labelme


def test_polygons_are_objects_and_rectangles_are_counted(tmp_path):
    scenes = write_labelme(tmp_path)
    dm = LabelMeDataModule(root=tmp_path, val_root=tmp_path, image_size=64)
    assert dm.classes == sorted(YOLO_NAMES)  # found in the files: cytoplasm, nucleus
    ds = dm.raw_dataset("train")
    assert len(ds) == 4 and ds.stats["rectangles_ignored"] == 4 and ds.stats["objects"] == 12
    for i in range(len(ds)):
        sample = ds[i]
        scene = scenes[sample.meta["image_id"]]
        np.testing.assert_array_equal(sample.masks, scene.masks)
        names = [sample.meta["class_names"][c] for c in sample.class_ids.tolist()]
        assert names == [YOLO_NAMES[c - 1] for c in scene.classes]


def test_groups_merge_and_bad_files_are_named(tmp_path):
    write_labelme(tmp_path, n=3)
    doc = json.loads((tmp_path / "photo0.json").read_text())
    for shape in doc["shapes"][:2]:
        shape["group_id"] = 1
        shape["label"] = "nucleus"
    (tmp_path / "photo0.json").write_text(json.dumps(doc))
    doc = json.loads((tmp_path / "photo1.json").read_text())
    doc["imageHeight"] = 50
    (tmp_path / "photo1.json").write_text(json.dumps(doc))
    (tmp_path / "photo2.json").write_text("{not json")
    with pytest.raises(DataError, match=r"photo2\.json: cannot read LabelMe json"):
        LabelMeDataModule(root=tmp_path, val_fraction=0.0, image_size=64).raw_dataset("train")
    dm = LabelMeDataModule(root=tmp_path, val_fraction=0.0, image_size=64, on_error="skip")
    with pytest.warns(DataSkipWarning):
        ds = dm.raw_dataset("train")
    assert len(ds) == 1 and ds[0].masks.shape[0] == 2  # two shapes of group 1 are one object
    reasons = dict((f.rsplit("/", 1)[-1], r) for f, r in ds.skipped)
    assert set(reasons) == {"photo1.png", "photo2.json"}
    assert "photo1.json: says the image is 50x88 (HxW) but" in reasons["photo1.png"]
    only = LabelMeDataModule(
        root=tmp_path, val_fraction=0.0, classes=["cytoplasm"], image_size=64, on_error="skip"
    )
    with pytest.warns(DataSkipWarning):
        stats = only.raw_dataset("train").stats
    assert stats["labels_ignored"] == 3 and stats["dropped_images"] == 1


def test_image_found_beside_the_json_or_read_from_image_data(tmp_path):
    import base64

    scenes = write_labelme(tmp_path, n=3)
    # photo0: the annotator's Windows path; photo1: only embedded (file moved away);
    # photo2: neither file nor imageData
    doc = json.loads((tmp_path / "photo0.json").read_text())
    doc["imagePath"] = "C:\\Users\\ann\\labels\\photo0.png"
    (tmp_path / "photo0.json").write_text(json.dumps(doc))
    doc = json.loads((tmp_path / "photo1.json").read_text())
    doc["imageData"] = base64.b64encode((tmp_path / "photo1.png").read_bytes()).decode()
    (tmp_path / "photo1.json").write_text(json.dumps(doc))
    (tmp_path / "photo1.png").rename(tmp_path / "elsewhere.bin")
    (tmp_path / "photo2.png").unlink()
    with pytest.raises(DataError, match=r"photo2\.png: image file not found"):
        LabelMeDataModule(root=tmp_path, val_fraction=0.0, image_size=64).raw_dataset("train")
    dm = LabelMeDataModule(root=tmp_path, val_fraction=0.0, image_size=64, on_error="skip")
    with pytest.warns(DataSkipWarning):
        ds = dm.raw_dataset("train")
    assert len(ds) == 2
    for i in range(len(ds)):
        sample = ds[i]
        scene = scenes[sample.meta["image_id"]]
        np.testing.assert_array_equal(sample.image, scene.image)
        np.testing.assert_array_equal(sample.masks, scene.masks)
    assert ds[1].meta["image_source"] == "imageData"

    doc["imageData"] = "not base64!"
    (tmp_path / "photo1.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"photo1\.json: imageData is not base64"):
        LabelMeDataModule(root=tmp_path, val_fraction=0.0, image_size=64).raw_dataset("train")
