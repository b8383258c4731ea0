"""One mask file per object: the nested (Data Science Bowl) and flat layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samtune.data.datamodules.per_object import PerObjectDataModule
from samtune.data.datasets.base import DataSkipWarning
from samtune.data.datasets.per_object import PerObjectDataset
from samtune.data.sample import DataError
from tests.data.layouts import write_per_object_flat, write_per_object_nested


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_each_mask_file_is_one_object(tmp_path, layout):
    write = write_per_object_nested if layout == "nested" else write_per_object_flat
    scenes = write(tmp_path)
    ds = PerObjectDataset(root=tmp_path)
    assert ds.layout == layout and len(ds) == 4 and ds.stats["objects"] == 12
    for i in range(len(ds)):
        sample = ds[i]
        scene = scenes[sample.meta["image_id"]]
        np.testing.assert_array_equal(sample.image, scene.image)
        np.testing.assert_array_equal(sample.masks, scene.masks)
        assert sample.class_ids.tolist() == [1, 1, 1]


def test_bad_files_are_named_and_skipped(tmp_path):
    scenes = write_per_object_nested(tmp_path, n=4)
    first, second, third, _ = sorted(scenes)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / first / "masks" / "m1.png")
    (tmp_path / second / "masks" / "m0.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((72, 88), np.uint8)).save(tmp_path / third / "masks" / "m0.png")
    with pytest.raises(DataError, match=rf"{first}/masks/m1\.png: mask is 10x10 \(HxW\)"):
        PerObjectDataset(root=tmp_path)
    with pytest.warns(DataSkipWarning):
        ds = PerObjectDataset(root=tmp_path, on_error="skip")
    assert len(ds) == 2 and ds.stats["skipped"] == 2 and ds.stats["dropped_empty"] == 1
    reasons = " ".join(reason for _, reason in ds.skipped)
    assert f"{second}/masks/m0.png: cannot read" in reasons
    (tmp_path / "stray").mkdir()
    with pytest.raises(DataError, match=r"stray: no images/ folder"):
        PerObjectDataset(root=tmp_path, layout="nested")
    with pytest.raises(DataError, match="no per-object mask layout found"):
        PerObjectDataset(root=tmp_path / "stray")


def test_datamodule_splits_off_val(tmp_path):
    write_per_object_flat(tmp_path, n=5)
    dm = PerObjectDataModule(root=tmp_path, val_fraction=0.4, image_size=64)
    train, val = dm.raw_dataset("train"), dm.raw_dataset("val")
    assert len(train) == 3 and len(val) == 2
    assert not {s.meta["image_id"] for s in train} & {s.meta["image_id"] for s in val}
    with pytest.raises(ValueError, match="no 'test' split"):
        dm.raw_dataset("test")
