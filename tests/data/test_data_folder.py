"""Image/mask folders: pairing by stem, instance maps, binary masks, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy import ndimage

from samtune.data.datasets.base import DataSkipWarning
from samtune.data.datasets.folder import FolderDataset, mask_key
from samtune.data.sample import DataError


def _image(path, shape=(20, 30)):
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)


def _instance_map(seed, shape=(20, 30)) -> np.ndarray:
    """Up to three rectangles labelled 1, 5, 300 (uint16), one of them in two pieces."""
    labels = np.zeros(shape, dtype=np.uint16)
    labels[1:5, 1:6] = 1
    labels[8:12, 2:9] = 5
    labels[8:12, 20:25] = 5  # same id, second piece: still one object
    if seed % 2:
        labels[14:19, 10:28] = 300
    return labels


@pytest.fixture
def instance_folders(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    expected = {}
    for i, stem in enumerate(["c1", "c2", "c3"]):
        _image(images / f"{stem}.png")
        labels = _instance_map(i)
        if stem == "c2":
            Image.fromarray(labels).save(masks / f"{stem}_mask.png")  # suffix pairing
        elif stem == "c3":
            tifffile.imwrite(masks / f"{stem}.tif", labels)  # other format, same stem
        else:
            Image.fromarray(labels).save(masks / f"{stem}.png")
        expected[stem] = labels
    (masks / "notes.txt").write_text("ignored")
    return images, masks, expected


def test_mask_key_rule():
    from pathlib import Path

    assert mask_key(Path("a/cell_1_mask.png")) == ["cell_1_mask", "cell_1"]
    assert mask_key(Path("cell.tif")) == ["cell"]
    assert mask_key(Path("_mask.png")) == ["_mask"]


def test_instance_maps_pair_by_stem(instance_folders):
    images, masks, expected = instance_folders
    ds = FolderDataset(images=images, masks=masks)
    assert len(ds) == 3
    for index in range(3):
        sample = ds[index]
        labels = expected[sample.meta["image_id"]]
        ids = [v for v in np.unique(labels) if v != 0]
        assert sample.masks.shape == (len(ids), 20, 30)
        for mask, value in zip(sample.masks, ids, strict=True):
            np.testing.assert_array_equal(mask, labels == value)
        assert sample.class_ids.tolist() == [1] * len(ids)
        assert sample.meta["mask_type"] == "instance" and sample.meta["orig_size"] == (20, 30)
    assert ds[1].meta["mask_file"].endswith("c2_mask.png")
    assert ds.stats["objects"] == 2 + 3 + 2 and ds.stats["images"] == 3


@pytest.mark.parametrize("foreground", [1, 255])
def test_binary_masks_become_connected_components(tmp_path, foreground):
    images, masks = tmp_path / "im", tmp_path / "ma"
    images.mkdir()
    masks.mkdir()
    _image(images / "x.jpg")
    binary = np.zeros((20, 30), dtype=np.uint8)
    binary[2:6, 2:6] = foreground
    binary[6:9, 6:9] = foreground  # touches the first only at a corner: 8-connected, one object
    binary[12:18, 15:25] = foreground
    binary[0, 29] = foreground
    Image.fromarray(binary).save(masks / "x_mask.png")
    ds = FolderDataset(images=images, masks=masks, mask_type="auto")
    sample = ds[0]
    reference, n = ndimage.label(binary > 0, structure=np.ones((3, 3)))
    assert n == 3 and sample.masks.shape[0] == 3 and sample.meta["mask_type"] == "binary"
    got = sorted(int(m.sum()) for m in sample.masks)
    assert got == sorted(int((reference == k).sum()) for k in range(1, n + 1)) == [1, 25, 60]
    assert (sample.masks.sum(0) == (binary > 0)).all()
    small = FolderDataset(images=images, masks=masks, min_area=2)
    assert (
        small.stats["objects"] == 2
        and small.stats["dropped_small"] == 1
        and small[0].masks.shape[0] == 2
    )
    as_instance = FolderDataset(images=images, masks=masks, mask_type="instance")
    assert as_instance[0].masks.shape[0] == 1  # one label value: one object


def test_shared_folder_and_empty_masks(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    Image.fromarray(_instance_map(1)).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "b_mask.png")
    ds = FolderDataset(images=tmp_path, masks=tmp_path)
    assert len(ds) == 1 and ds.stats["dropped_images"] == 1 and ds[0].meta["image_id"] == "a"


def test_image_without_mask_and_mask_without_image(tmp_path, instance_folders):
    images, masks, _ = instance_folders
    _image(images / "lonely.png")
    with pytest.raises(DataError, match=r"lonely\.png: image has no mask") as err:
        FolderDataset(images=images, masks=masks)
    assert "lonely_mask" in str(err.value) and "lonely_instances" in str(err.value)
    assert "mask_suffix" in str(err.value)
    (images / "lonely.png").unlink()
    Image.fromarray(_instance_map(0)).save(masks / "orphan_mask.png")
    with pytest.raises(DataError, match=r"orphan_mask\.png: mask has no image") as err:
        FolderDataset(images=images, masks=masks)
    assert "mask_suffix" in str(err.value)


def _isic_like(root, n=3, suffix="_segmentation"):
    """ISIC-style names: ``ISIC_000k.jpg`` with ``ISIC_000k<suffix>.png`` binary masks."""
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    for k in range(n):
        _image(images / f"ISIC_000{k}.jpg")
        binary = np.zeros((20, 30), np.uint8)
        binary[3 : 8 + k, 4:12] = 255
        Image.fromarray(binary).save(masks / f"ISIC_000{k}{suffix}.png")
    return images, masks


def test_mask_suffix_pairs_and_unpaired_images_are_one_error_each(tmp_path):
    images, masks = _isic_like(tmp_path)
    with pytest.warns(DataSkipWarning):
        skipped = FolderDataset(images=images, masks=masks, on_error="skip")
    # one error per image (the masks are named in them, not reported a second time)
    assert len(skipped.skipped) == 3 and all(f.endswith(".jpg") for f, _ in skipped.skipped)
    reason = skipped.skipped[0][1]
    assert "ISIC_0000_mask" in reason and "mask_suffix" in reason
    assert "ISIC_0000_segmentation.png" in reason  # the unpaired masks are pointed out
    ds = FolderDataset(images=images, masks=masks, mask_suffix="_segmentation")
    assert len(ds) == 3 and ds[2].meta["mask_file"].endswith("ISIC_0002_segmentation.png")
    several = FolderDataset(images=images, masks=masks, mask_suffix=["_seg", "_segmentation"])
    assert len(several) == 3
    with pytest.raises(ValueError, match="mask_suffix"):
        FolderDataset(images=images, masks=masks, mask_suffix="")


def test_broken_symbolic_link_is_named_as_such(tmp_path):
    images, masks = _isic_like(tmp_path, suffix="_mask")
    (images / "ISIC_0001.jpg").unlink()
    (images / "ISIC_0001.jpg").symlink_to(tmp_path / "gone" / "ISIC_0001.jpg")
    with pytest.warns(DataSkipWarning):
        ds = FolderDataset(images=images, masks=masks, on_error="skip")
    ((file, reason),) = ds.skipped
    assert file.endswith("ISIC_0001.jpg") and "broken symbolic link" in reason
    assert str(tmp_path / "gone") in reason and len(ds) == 2
    (images / "ISIC_0001.jpg").unlink()
    (masks / "ISIC_0001_mask.png").unlink()
    (masks / "ISIC_0002_mask.png").unlink()
    (masks / "ISIC_0002_mask.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"ISIC_0002_mask\.png: broken symbolic link"):
        FolderDataset(images=images, masks=masks, on_error="raise")


def test_connectivity_4_splits_cells_touching_at_a_corner(tmp_path):
    images, masks = tmp_path / "im", tmp_path / "ma"
    images.mkdir()
    masks.mkdir()
    _image(images / "em.png")
    binary = np.zeros((20, 30), dtype=np.uint8)
    binary[2:6, 2:6] = 1
    binary[6:10, 6:10] = 1  # meets the first only across a diagonal
    Image.fromarray(binary).save(masks / "em.png")
    assert len(FolderDataset(images=images, masks=masks)[0].masks) == 1  # default 8
    four = FolderDataset(images=images, masks=masks, connectivity=4)[0]
    assert len(four.masks) == 2 and sorted(int(m.sum()) for m in four.masks) == [16, 16]
    with pytest.raises(ValueError, match="connectivity must be 4 or 8"):
        FolderDataset(images=images, masks=masks, connectivity=6)


def test_mask_of_wrong_size_names_both_files_and_sizes(instance_folders):
    images, masks, _ = instance_folders
    Image.fromarray(_instance_map(0, shape=(21, 30))).save(masks / "c1.png")
    with pytest.raises(
        DataError, match=r"c1\.png: mask is 21x30 \(HxW\) but its image .*images/c1\.png is 20x30"
    ):
        FolderDataset(images=images, masks=masks)


def test_skip_mode_counts_bad_pairs(instance_folders):
    images, masks, _ = instance_folders
    Image.fromarray(_instance_map(0, shape=(21, 30))).save(masks / "c1.png")
    _image(images / "lonely.png")
    (masks / "c3.tif").write_bytes(b"broken tiff")
    with pytest.warns(DataSkipWarning):
        ds = FolderDataset(images=images, masks=masks, on_error="skip")
    assert len(ds) == 1 and ds[0].meta["image_id"] == "c2"
    reasons = dict(ds.skipped)
    assert ds.stats["skipped"] == 3 and sorted(f.rsplit("/", 1)[-1] for f in reasons) == [
        "c1.png",
        "c3.png",
        "lonely.png",
    ]
    assert any("c3.tif: cannot read image" in r for r in reasons.values())


def test_subset_recounts(instance_folders):
    images, masks, _ = instance_folders
    ds = FolderDataset(images=images, masks=masks)
    part = ds.subset([2, 0])
    assert len(part) == 2 and [part[i].meta["image_id"] for i in range(2)] == ["c3", "c1"]
    assert part.stats["objects"] == 2 + 2 and part.stats["images"] == 2
