"""Datamodules: batches, collate, splits, and bad data inside DataLoader workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from samtune.data import FolderDataModule, NucleiMiniDataModule, SyntheticDataModule, collate
from samtune.data.datasets.synthetic import SyntheticDataset
from samtune.data.sample import DataError


def _item(n: int, size: int = 8) -> dict:
    return {
        "image": torch.full((3, size, size), float(n)),
        "masks": torch.ones(n, size, size, dtype=torch.bool),
        "class_ids": torch.ones(n, dtype=torch.int64),
        "meta": {"file": f"{n}.png"},
    }


def test_collate_drops_none_and_empty_batches():
    batch = collate([_item(2), None, _item(1)])
    assert batch["images"].shape == (2, 3, 8, 8) and batch["images"][1, 0, 0, 0] == 1.0
    assert [m.shape[0] for m in batch["masks"]] == [2, 1] and [
        m["file"] for m in batch["meta"]
    ] == ["2.png", "1.png"]
    assert collate([None, None]) is None


def test_synthetic_dataset_is_deterministic_and_counted():
    ds = SyntheticDataset(num_images=5, size=(40, 56), objects=(2, 3), seed=3)
    again = SyntheticDataset(num_images=5, size=(40, 56), objects=(2, 3), seed=3)
    other = SyntheticDataset(num_images=5, size=(40, 56), objects=(2, 3), seed=4)
    total = 0
    for i in range(5):
        a, b = ds[i], again[i]
        assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
        assert 1 <= a.masks.shape[0] <= 3 and a.image.shape == (40, 56, 3)
        assert not (a.masks.sum(0) > 1).any()  # no overlaps
        assert a.image[a.masks.any(0)].min() >= 150 and a.image[~a.masks.any(0)].max() < 40
        total += a.masks.shape[0]
    assert ds.stats["objects"] == total and ds.stats["images"] == 5
    assert not np.array_equal(ds[0].image, other[0].image)


def test_synthetic_datamodule_batches():
    dm = SyntheticDataModule(
        image_size=64, num_train=5, num_val=3, batch_size=2, augment={"hflip": 0.5}
    )
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [b["images"].shape[0] for b in batches] == [2, 2, 1]
    assert (
        batches[0]["images"].shape[1:] == (3, 64, 64)
        and batches[0]["images"].dtype == torch.float32
    )
    assert all(
        m.dtype == torch.bool and m.shape[1:] == (64, 64) for b in batches for m in b["masks"]
    )
    val = list(dm.val_dataloader())  # original-resolution samples, as evaluation reads them
    assert sum(len(b["samples"]) for b in val) == 3
    assert [s.meta["image_id"] for b in val for s in b["samples"]] == [0, 1, 2]  # in order
    assert [i for b in val for i in b["indices"].tolist()] == [0, 1, 2]
    raw = dm.raw_dataset("val")[0]
    assert np.array_equal(val[0]["samples"][0].image, raw.image)
    assert not np.array_equal(dm.raw_dataset("train")[0].image, dm.raw_dataset("val")[0].image)
    shuffled = [m["image_id"] for b in batches for m in b["meta"]]
    assert sorted(shuffled) == [0, 1, 2, 3, 4]
    text = dm.summary()
    assert "train: 5 images" in text and "val: 3 images" in text
    with pytest.raises(ValueError, match="not 'test'"):
        dm.test_dataloader()


def test_nuclei_datamodule_summary_and_raw():
    dm = NucleiMiniDataModule(image_size=128)
    dm.setup("fit")
    assert len(dm.raw_dataset("train")) == 24 and len(dm.raw_dataset("val")) == 8
    text = dm.summary()
    assert "train: 24 images, 677 objects" in text and "val: 8 images, 250 objects" in text
    batch = next(iter(dm.val_dataloader()))
    assert len(batch["samples"]) == 2
    assert batch["samples"][0].image.shape == dm.raw_dataset("val")[0].image.shape
    model_input = next(iter(dm.input_dataloader("val")))
    assert model_input["images"].shape == (2, 3, 128, 128)
    assert model_input["meta"][0]["orig_size"] == dm.raw_dataset("val")[0].image.shape[:2]


def _folder_data(tmp_path, n: int = 6, broken: str | None = None):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(
            images / f"im{i}.png"
        )
        labels = np.zeros((32, 40), np.uint8)
        labels[4:12, 4:14] = 1
        labels[18:28, 20:36] = 2
        Image.fromarray(labels).save(masks / f"im{i}.png")
    if broken is not None:  # header intact, pixel data cut: passes indexing, fails when read
        data = (images / broken).read_bytes()
        (images / broken).write_bytes(data[: len(data) // 2])
    return images, masks


def test_folder_datamodule_random_split(tmp_path):
    images, masks = _folder_data(tmp_path, n=10)
    dm = FolderDataModule(
        image_size=32, train_images=images, train_masks=masks, val_fraction=0.3, seed=1
    )
    train, val = dm.raw_dataset("train"), dm.raw_dataset("val")
    train_files = {train.file_of(i) for i in range(len(train))}
    val_files = {val.file_of(i) for i in range(len(val))}
    assert (len(train), len(val)) == (7, 3) and not train_files & val_files
    same = FolderDataModule(
        image_size=32, train_images=images, train_masks=masks, val_fraction=0.3, seed=1
    )
    assert {same.raw_dataset("val").file_of(i) for i in range(3)} == val_files
    other = FolderDataModule(
        image_size=32, train_images=images, train_masks=masks, val_fraction=0.3, seed=2
    )
    assert {other.raw_dataset("val").file_of(i) for i in range(3)} != val_files
    assert train.stats["objects"] == 14 and val.stats["objects"] == 6


def test_error_inside_a_worker_names_the_file(tmp_path):
    images, masks = _folder_data(tmp_path, n=3, broken="im1.png")
    dm = FolderDataModule(
        image_size=32,
        train_images=images,
        train_masks=masks,
        val_images=images,
        val_masks=masks,
        num_workers=1,
    )
    with pytest.raises(DataError, match=r"im1\.png: cannot read image"):
        list(dm.val_dataloader())


def test_skip_inside_a_worker_is_logged_and_counted(tmp_path):
    images, masks = _folder_data(tmp_path, n=4, broken="im2.png")
    log = tmp_path / "run" / "skipped.jsonl"
    dm = FolderDataModule(
        image_size=32,
        train_images=images,
        train_masks=masks,
        val_images=images,
        val_masks=masks,
        num_workers=1,
        batch_size=4,
        on_error="skip",
        skip_log=str(log),
    )
    for _ in range(2):  # two epochs: the file is skipped twice but counted once
        batches = list(dm.val_dataloader())
        samples = batches[0]["samples"]
        assert len(batches) == 1 and len(samples) == 4 and samples[2] is None
        assert [s.meta["image_id"] for s in samples if s is not None] == ["im0", "im1", "im3"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 2 and all(r["split"] == "val" and r["stage"] == "load" for r in records)
    assert records[0]["file"].endswith("im2.png") and "cannot read image" in records[0]["reason"]
    assert dm.raw_dataset("val").skipped == []  # the worker's memory is not the main process's
    skipped = dm.skipped_files()
    assert list(skipped) == ["val"] and len(skipped["val"]) == 1
    assert "skipped (bad data): 1 images" in dm.summary() and "im2.png" in dm.summary()


def test_skips_while_indexing_reach_the_log(tmp_path):
    images, masks = _folder_data(tmp_path, n=3)
    (masks / "im0.png").unlink()
    log = tmp_path / "skipped.jsonl"
    with pytest.warns(UserWarning, match=r"im0\.png: image has no mask"):
        dm = FolderDataModule(
            image_size=32,
            train_images=images,
            train_masks=masks,
            val_fraction=0.0,
            on_error="skip",
            skip_log=str(log),
        )
        dm.setup("fit")
    assert len(dm.raw_dataset("train")) == 2 and len(dm.raw_dataset("val")) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["split"], r["stage"]) for r in records] == [("train", "index")]
    assert dm.skipped_files()["train"][0][0].endswith("im0.png")
