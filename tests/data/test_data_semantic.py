"""Semantic masks: class values or a colour palette, regions as objects, names carried."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from samtune.data.datamodules.semantic import SemanticDataModule
from samtune.data.datasets.base import DataSkipWarning
from samtune.data.datasets.semantic import SemanticFolderDataset, parse_class_table
from samtune.data.sample import DataError
from tests.data.layouts import PALETTE, write_semantic

VALUES = {1: "tumour", 2: "stroma"}


@pytest.mark.parametrize("palette", [False, True])
def test_each_region_of_a_class_is_an_object_of_that_class(tmp_path, palette):
    scenes = write_semantic(tmp_path, palette=palette)
    classes = {name: list(rgb) for name, rgb in PALETTE.items()} if palette else VALUES
    ds = SemanticFolderDataset(
        images=tmp_path / "images", masks=tmp_path / "masks", classes=classes
    )
    assert len(ds) == 4 and ds.stats["objects"] == 16 and ds.stats["unlisted_pixels"] == 0
    for i in range(len(ds)):
        sample = ds[i]
        scene = scenes[sample.meta["image_id"]]
        assert sample.meta["class_names"] == VALUES
        got = {(int(c), m.tobytes()) for c, m in zip(sample.class_ids, sample.masks)}
        want = {(int(c), m.tobytes()) for c, m in zip(scene.classes, scene.masks)}
        assert got == want


def test_unlisted_values_are_counted_and_bad_masks_named(tmp_path):
    write_semantic(tmp_path, n=3)
    mask = np.array(Image.open(tmp_path / "masks" / "tile0.png"))
    mask[:2, :5] = 9  # a value outside the table
    Image.fromarray(mask).save(tmp_path / "masks" / "tile0.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "tile1.png")
    with pytest.raises(DataError, match=r"tile1\.png: mask is 10x10"):
        SemanticFolderDataset(images=tmp_path / "images", masks=tmp_path / "masks", classes=VALUES)
    dm = SemanticDataModule(
        train_images=tmp_path / "images", train_masks=tmp_path / "masks", classes=VALUES,
        val_fraction=0.0, image_size=64, on_error="skip",
    )  # fmt: skip
    with pytest.warns(DataSkipWarning):
        train = dm.raw_dataset("train")
    assert len(train) == 2 and train.stats["unlisted_pixels"] == 10


def test_class_table_errors_name_the_entry():
    assert parse_class_table({"a": [1, 2, 3]})[2] == {(1, 2, 3): 1}
    with pytest.raises(ValueError, match="got 'x': 'tumour'"):
        parse_class_table({"x": "tumour"})
    with pytest.raises(ValueError, match=r"class 'a': a colour is \[r, g, b\]"):
        parse_class_table({"a": [1, 2]})


def test_a_table_matching_no_pixel_says_what_the_masks_hold(tmp_path):
    write_semantic(tmp_path, n=2)  # values 1 and 2, read here as a palette
    with pytest.raises(
        DataError, match=r"no mask pixel matches .* colour \[1, 1, 1\], colour \[2, 2, 2\]"
    ):
        SemanticFolderDataset(
            images=tmp_path / "images", masks=tmp_path / "masks", classes={"a": [255, 0, 0]}
        )
