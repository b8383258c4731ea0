"""VolumeSliceDataset: slices of a NIfTI pair as samples."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    VolumeSliceDataset,
)
from tests.data.volumes.helpers import (
    SHAPE,
    SPACING,
    make_case,
)
from tests.helpers import save_nifti


@pytest.fixture
def nifti_pair(tmp_path):
    hu, label = make_case()
    save_nifti(tmp_path / "img" / "case01.nii.gz", hu)
    save_nifti(tmp_path / "lab" / "case01_seg.nii.gz", label)
    return tmp_path / "img", tmp_path / "lab", hu, label


def test_dataset_counts_follow_empty_slice_rate(nifti_pair):
    images, labels, _, label = nifti_pair
    with_objects = [k for k in range(SHAPE[2]) if label[:, :, k].any()]
    assert len(with_objects) == 7
    none = VolumeSliceDataset(images=images, labels=labels, window="abdomen", empty_slice_rate=0.0)
    assert len(none) == len(with_objects)
    assert [s.meta["slice"] for s in none] == with_objects
    every = VolumeSliceDataset(images=images, labels=labels, window="abdomen", empty_slice_rate=1.0)
    assert len(every) == SHAPE[2]
    assert sum(s.masks.shape[0] == 0 for s in every) == SHAPE[2] - len(with_objects)
    along0 = VolumeSliceDataset(images=images, labels=labels, axis=0, empty_slice_rate=1.0)
    assert len(along0) == SHAPE[0] and along0[0].image.shape == (SHAPE[1], SHAPE[2], 3)


def test_dataset_partial_rate_is_deterministic_and_nested(nifti_pair):
    images, labels, _, _ = nifti_pair

    def kept(rate, seed=0):
        ds = VolumeSliceDataset(images=images, labels=labels, empty_slice_rate=rate, seed=seed)
        return ds.slices_of("case01")

    low, high = kept(0.3), kept(0.7)
    assert kept(0.3) == low and kept(0.7) == high
    assert set(low) <= set(high)
    assert 7 <= len(low) <= len(high) <= 12
    assert any(len(kept(0.5, seed)) not in (7, 12) for seed in range(5))


def test_dataset_sample_image_masks_and_meta(nifti_pair):
    images, labels, hu, label = nifti_pair
    ds = VolumeSliceDataset(
        images=images,
        labels=labels,
        window={"level": 40, "width": 400},
        mode="semantic",
        classes={1: "liver", 2: "tumour"},
    )
    sample = next(s for s in ds if s.meta["slice"] == 6)
    expected = np.clip(np.floor((hu[:, :, 6].astype(np.float64) + 160) * 255 / 400 + 0.5), 0, 255)
    np.testing.assert_array_equal(sample.image[..., 0], expected.astype(np.uint8))
    np.testing.assert_array_equal(sample.image[..., 0], sample.image[..., 2])
    assert sample.class_ids.tolist() == [1, 2]
    np.testing.assert_array_equal(sample.masks[0], label[:, :, 6] == 1)
    np.testing.assert_array_equal(sample.masks[1], label[:, :, 6] == 2)
    meta = sample.meta
    assert meta["volume"] == "case01" and meta["axis"] == 2 and meta["slice"] == 6
    assert meta["file"].endswith("case01.nii.gz") and meta["class_names"] == {
        1: "liver",
        2: "tumour",
    }
    assert meta["spacing"] == pytest.approx(SPACING) and meta["pixel_spacing"] == pytest.approx(
        SPACING[:2]
    )
    assert sorted(s.meta["image_id"] for s in ds) == list(range(len(ds)))
    assert ds.volume_shapes == {"case01": SHAPE}
    np.testing.assert_array_equal(ds.label_volume("case01"), label)


def test_dataset_classes_filter_and_pickle_drops_cache(nifti_pair):
    images, labels, _, label = nifti_pair
    ds = VolumeSliceDataset(images=images, labels=labels, classes={2: "b"})
    assert ds.slices_of("case01") == [k for k in range(SHAPE[2]) if (label[:, :, k] == 2).any()]
    assert all(set(s.class_ids.tolist()) == {2} for s in ds)
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._cache) == 0 and len(clone) == len(ds)
    np.testing.assert_array_equal(clone[0].masks, ds[0].masks)


def test_dataset_rejects_bad_options(nifti_pair):
    images, labels, _, _ = nifti_pair
    with pytest.raises(ValueError, match="unknown CT window preset 'liver'"):
        VolumeSliceDataset(images=images, labels=labels, window="liver")
    with pytest.raises(ValueError, match="axis"):
        VolumeSliceDataset(images=images, labels=labels, axis=3)
    with pytest.raises(ValueError, match="empty_slice_rate"):
        VolumeSliceDataset(images=images, labels=labels, empty_slice_rate=1.5)
