"""Readers turn what a dataset marks "not labelled" into ``Sample.ignore``; check-data counts it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samtune.data import CocoDataModule, FolderDataModule
from samtune.data.check import check_datamodule, format_check
from samtune.data.datamodules.labelme import LabelMeDataModule
from samtune.data.datamodules.semantic import SemanticDataModule
from samtune.data.datasets import labelme as labelme_module
from samtune.data.datasets.coco import CocoDataset
from samtune.data.datasets.folder import FolderDataset
from samtune.data.datasets.labelme import LabelMeDataset
from samtune.data.sample import DataError
from tests.data import layouts


def _by_name(dataset) -> dict:
    return {
        sample.meta["file"].rsplit("/", 1)[-1]: sample
        for sample in (dataset[i] for i in range(len(dataset)))
    }


def test_coco_crowd_regions_become_ignore_not_objects(tmp_path):
    truth = layouts.write_coco_single(tmp_path / "coco")
    dataset = CocoDataset(root=tmp_path / "coco", ann_file=tmp_path / "coco" / "annotations.json")
    assert dataset.stats["crowd_ignored"] == 3 and dataset.stats["objects"] == 9
    for name, sample in _by_name(dataset).items():
        scene, crowd = truth[name]["scene"], truth[name]["crowd"]
        assert sample.masks.shape[0] == 3  # the crowd is no object
        expected = crowd & ~scene.masks.any(axis=0)
        assert expected.any()
        np.testing.assert_array_equal(sample.ignore, expected)  # RLE (even) and polygon (odd)


def test_coco_crowd_with_a_bad_segmentation_names_the_json(tmp_path):
    truth = layouts.write_coco_single(tmp_path / "coco")
    ann_file = tmp_path / "coco" / "annotations.json"
    data = json.loads(ann_file.read_text())
    crowd = next(a for a in data["annotations"] if a["iscrowd"])
    crowd["segmentation"] = {"size": [5, 5], "counts": "00"}
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"annotations\.json: annotation id .* RLE size 5x5"):
        CocoDataset(root=tmp_path / "coco", ann_file=ann_file)
    assert truth  # written


def test_voc_border_255_is_ignore_in_instance_and_class_masks(tmp_path):
    truth = layouts.write_voc(tmp_path / "voc")
    images = tmp_path / "voc" / "JPEGImages"
    objects = FolderDataset(images=images, masks=tmp_path / "voc" / "SegmentationObject")
    for name, sample in _by_name(objects).items():
        scene, border = truth[name.removesuffix(".jpg")]
        assert sample.masks.shape[0] == 3  # the instances; 255 is no fourth object
        for mask in scene.masks:
            assert any(np.array_equal(mask, m) for m in sample.masks)
        np.testing.assert_array_equal(sample.ignore, border)
    # the 255 is read as a label only when asked to (void_value=None)
    plain = FolderDataset(
        images=images, masks=tmp_path / "voc" / "SegmentationObject", void_value=None
    )
    assert plain[0].masks.shape[0] == 4 and plain[0].ignore is None
    classes = SemanticDataModule(
        train_images=images,
        train_masks=tmp_path / "voc" / "SegmentationClass",
        val_images=images,
        val_masks=tmp_path / "voc" / "SegmentationClass",
        classes={1: "cat", 2: "dog"},
        image_size=64,
        num_workers=0,
    ).raw_dataset("train")
    assert classes.stats["unlisted_pixels"] == 0  # the border is not "another value"
    sample = _by_name(classes)["2007_000000.jpg"]
    np.testing.assert_array_equal(sample.ignore, truth["2007_000000"][1])
    assert sorted(set(sample.class_ids.tolist())) == [1, 2]


def test_a_grey_mask_keeps_255_as_foreground_unless_told(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(images / "a.png")
    mask = np.zeros((20, 24), np.uint8)
    mask[2:8, 2:8] = 255  # a binary 0/255 mask, the usual kind
    mask[12:18, 12:20] = 255
    Image.fromarray(mask).save(masks / "a.png")
    assert FolderDataset(images=images, masks=masks)[0].masks.shape[0] == 2
    told = FolderDataset(images=images, masks=masks, void_value=255)  # all of it not labelled
    assert len(told) == 0 and told.stats["dropped_images"] == 1
    with pytest.raises(ValueError, match="data.void_value must be"):
        FolderDataset(images=images, masks=masks, void_value="border")


def test_labelme_ignore_shapes_and_imagedata_decoded_once(tmp_path, monkeypatch):
    truth = layouts.write_labelme_ignore(tmp_path / "lm")
    calls = []
    decode = labelme_module.decode_image_bytes

    def counting(data, name):
        calls.append(name)
        return decode(data, name)

    monkeypatch.setattr(labelme_module, "decode_image_bytes", counting)
    dataset = LabelMeDataset(root=tmp_path / "lm", classes=["nucleus"])
    assert calls == []  # indexing reads the embedded image's header only
    assert dataset.stats["ignore_shapes"] == 2 and dataset.stats["labels_ignored"] == 0
    for i in range(len(dataset)):
        sample = dataset[i]
        scene, band = truth[sample.meta["image_id"]]
        np.testing.assert_array_equal(sample.image, scene.image)
        np.testing.assert_array_equal(sample.ignore, band & ~scene.masks.any(axis=0))
        assert sample.masks.shape[0] == 2
    assert len(calls) == len(dataset)  # one decode per sample
    # the classes found never include __ignore__, and it cannot be asked for as a class
    module = LabelMeDataModule(root=tmp_path / "lm", image_size=64, num_workers=0)
    assert module.classes == ["nucleus"]
    with pytest.raises(ValueError, match="__ignore__ marks not-labelled regions"):
        LabelMeDataset(root=tmp_path / "lm", classes=["nucleus", "__ignore__"])


def test_labelme_ignore_rectangle(tmp_path):
    layouts.write_labelme_ignore(tmp_path / "lm", n=1)
    path = tmp_path / "lm" / "scan0.json"
    doc = json.loads(path.read_text())
    doc["shapes"][-1] = {
        "label": "__ignore__",
        "points": [[0, 0], [5, 3]],
        "shape_type": "rectangle",
    }
    path.write_text(json.dumps(doc))
    sample = LabelMeDataset(root=tmp_path / "lm", classes=["nucleus"])[0]
    expected = np.zeros(sample.image.shape[:2], bool)
    expected[0:3, 0:5] = True  # the rectangle's pixels, as COCO rasterises a polygon
    assert sample.ignore is not None
    assert (sample.ignore & expected).sum() == expected.sum()
    assert sample.ignore.sum() <= 6 * 4


def _fov_module(root, **extra):
    return FolderDataModule(
        train_images=root / "images",
        train_masks=root / "masks",
        val_fraction=0.34,
        ignore_masks=root / "fov",
        image_size=64,
        num_workers=0,
        **extra,
    )


def test_an_ignore_mask_folder_pairs_by_stem(tmp_path):
    truth = layouts.write_fov(tmp_path / "eye")
    module = _fov_module(tmp_path / "eye")
    seen = 0
    for split in ("train", "val"):
        dataset = module.raw_dataset(split)
        assert dataset.stats["without_ignore_mask"] == 0
        for i in range(len(dataset)):
            sample = dataset[i]
            scene, outside = truth[sample.meta["image_id"]]
            np.testing.assert_array_equal(sample.ignore, outside & ~scene.masks.any(axis=0))
            seen += 1
    assert seen == 3


def test_ignore_masks_that_pair_with_nothing_or_misfit_are_named(tmp_path):
    layouts.write_fov(tmp_path / "eye")
    with pytest.raises(DataError, match="nowhere: data.ignore_masks folder not found"):
        FolderDataModule(
            train_images=tmp_path / "eye" / "images",
            train_masks=tmp_path / "eye" / "masks",
            ignore_masks=tmp_path / "nowhere",
            image_size=64,
        )
    for path in (tmp_path / "eye" / "fov").iterdir():
        path.rename(path.with_name(f"other_{path.name}"))
    with pytest.raises(DataError, match=r"has a mask for none of the .* it looked for eye"):
        _fov_module(tmp_path / "eye").raw_dataset("train")
    for path in (tmp_path / "eye" / "fov").iterdir():
        path.rename(path.with_name(path.name.removeprefix("other_")))
    small = tmp_path / "eye" / "fov" / "eye0_mask.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    module = _fov_module(tmp_path / "eye")
    module.val_fraction = 0.0
    dataset = module.raw_dataset("train")
    index = [dataset.file_of(i) for i in range(len(dataset))].index(
        str(tmp_path / "eye" / "images" / "eye0.png")
    )
    with pytest.raises(
        DataError, match=r"eye0_mask\.png: ignore mask is 10x10 .*eye0\.png is 72x88"
    ):
        dataset[index]


def test_ignore_masks_refuse_volume_data(tmp_path):
    from samtune.data import VolumeDataModule

    layouts.write_fov(tmp_path / "eye")
    for case in range(2):
        image, label = layouts.tiny_case(case)
        layouts._save_nifti(tmp_path / "ct" / f"case{case}.nii.gz", image)
        layouts._save_nifti(tmp_path / "labels" / f"case{case}.nii.gz", label)
    module = VolumeDataModule(
        images=tmp_path / "ct", labels=tmp_path / "labels", image_size=64, num_workers=0,
        val_images=tmp_path / "ct", val_labels=tmp_path / "labels",
        ignore_masks=tmp_path / "eye" / "fov",
    )  # fmt: skip
    with pytest.raises(ValueError, match="data.ignore_masks applies to 2-D image datasets"):
        module.raw_dataset("train")


def test_check_data_counts_equal_the_hand_count(tmp_path):
    truth = layouts.write_coco_single(tmp_path / "coco")
    # and a field of view on top: the first image's left 6 columns
    fov = tmp_path / "fov"
    fov.mkdir()
    first = truth["frame000.png"]
    h, w = first["scene"].image.shape[:2]
    left = np.zeros((h, w), np.uint8)
    left[:, :6] = 1
    Image.fromarray(left).save(fov / "frame000.png")
    module = CocoDataModule(
        root=tmp_path / "coco", image_size=64, num_workers=0, on_error="skip", ignore_masks=fov
    )
    report = check_datamodule(module, splits=["train", "val"])
    assert report["ok"], report["problems"]
    entry = report["splits"]["val"]
    by_hand = 0
    for name, item in truth.items():
        region = item["crowd"] | (left.astype(bool) if name == "frame000.png" else False)
        by_hand += int((region & ~item["scene"].masks.any(axis=0)).sum())
    all_pixels = sum(
        item["scene"].image.shape[0] * item["scene"].image.shape[1] for item in truth.values()
    )
    assert entry["ignore"]["pixels"] == by_hand
    assert entry["ignore"]["images"] == 3
    assert entry["ignore"]["fraction"] == pytest.approx(by_hand / all_pixels)
    assert entry["ignore"]["crowd_ignored"] == 3
    assert entry["ignore"]["without_ignore_mask"] == 2
    text = format_check(report)
    assert (
        f"ignored (not labelled) pixels: {by_hand} in 3 of 3 images "
        f"({100 * by_hand / all_pixels:.2f}% of all pixels); iscrowd annotations turned into "
        "ignore regions: 3; images without a data.ignore_masks mask: 2"
    ) in text
    json.dumps(report)  # what check-data writes


def test_a_single_coco_json_beside_its_images_is_the_val_split(tmp_path):
    layouts.write_coco_single(tmp_path / "coco")
    module = CocoDataModule(root=tmp_path / "coco", image_size=64, num_workers=0, on_error="skip")
    assert module.defined_splits == ("val",)
    report = check_datamodule(module)
    assert report["ok"], report["problems"]
    assert report["splits"]["train"]["status"] == "not defined"
    assert "ships a single split, annotations.json" in report["splits"]["train"]["message"]
    assert report["splits"]["val"]["images"] == 3 and report["splits"]["val"]["objects"] == 9
    # a second json makes the folder ambiguous: named, with the keys that settle it
    (tmp_path / "coco" / "more.json").write_text("{}")
    with pytest.raises(DataError, match=r"holds 2 json files \(annotations.json, more.json\)"):
        CocoDataModule(root=tmp_path / "coco", image_size=64)


def test_split_off_labelme_counts_the_ignore_shapes_of_its_own_images(tmp_path):
    layouts.write_labelme_ignore(tmp_path / "lm", n=3)
    module = LabelMeDataModule(root=tmp_path / "lm", image_size=64, num_workers=0)
    counts = {split: module.raw_dataset(split).stats["ignore_shapes"] for split in ("train", "val")}
    sizes = {split: len(module.raw_dataset(split)) for split in ("train", "val")}
    assert counts == sizes and sum(counts.values()) == 3  # one __ignore__ polygon per image


def test_to_coco_writes_ignore_regions_as_crowds_that_read_back(tmp_path):
    from samtune.data.coco_export import write_coco

    layouts.write_voc(tmp_path / "voc")
    images = tmp_path / "voc" / "JPEGImages"
    module = FolderDataModule(
        train_images=images,
        train_masks=tmp_path / "voc" / "SegmentationObject",
        val_fraction=0.5,
        image_size=64,
        num_workers=0,
    )
    summary = write_coco(module, tmp_path / "voc.json", splits=["train", "val"])
    assert summary["ignore_regions"] == 2 and summary["annotations"] == 2 * 3 + 2
    back = CocoDataset(root=tmp_path, ann_file=tmp_path / "voc.json")
    assert back.stats["crowd_ignored"] == 2
    originals = {
        s.meta["file"]: s for split in ("train", "val") for s in [module.raw_dataset(split)[0]]
    }
    for i in range(len(back)):
        sample = back[i]
        np.testing.assert_array_equal(sample.ignore, originals[sample.meta["file"]].ignore)
