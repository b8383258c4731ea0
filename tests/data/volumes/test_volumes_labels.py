"""Objects from label slices, and choosing and converting slices."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    objects_from_label_slice,
    select_slices,
    slice_to_sample,
    slice_view,
    slices_with_objects,
    validate_classes,
)


def two_blobs_of_class_1() -> np.ndarray:
    """Class 1 in two separate squares (4 and 9 px), class 2 in one 2 px bar."""
    label = np.zeros((10, 12), dtype=np.uint8)
    label[1:3, 1:3] = 1
    label[5:8, 7:10] = 1
    label[8, 1:3] = 2
    return label


def test_instance_mode_splits_components_semantic_merges_them():
    label = two_blobs_of_class_1()
    masks, ids = objects_from_label_slice(label, mode="instance")
    assert masks.dtype == bool and masks.shape == (3, 10, 12)
    assert ids.tolist() == [1, 1, 2]
    np.testing.assert_array_equal(masks[0], np.pad(np.ones((2, 2), bool), ((1, 7), (1, 9))))
    np.testing.assert_array_equal(masks[1], np.pad(np.ones((3, 3), bool), ((5, 2), (7, 2))))
    np.testing.assert_array_equal(masks[2], label == 2)
    masks, ids = objects_from_label_slice(label, mode="semantic")
    assert ids.tolist() == [1, 2]
    np.testing.assert_array_equal(masks[0], label == 1)
    np.testing.assert_array_equal(masks[1], label == 2)


def test_connectivity_min_area_and_classes():
    diagonal = np.zeros((4, 4), dtype=np.int16)
    diagonal[0, 0] = diagonal[1, 1] = diagonal[2, 2] = 3
    assert objects_from_label_slice(diagonal)[0].shape[0] == 1
    assert objects_from_label_slice(diagonal, connectivity=4)[0].shape[0] == 3
    label = two_blobs_of_class_1()
    assert objects_from_label_slice(label, min_area=3)[1].tolist() == [1, 1]  # the 2 px bar goes
    assert objects_from_label_slice(label, min_area=2)[1].tolist() == [1, 1, 2]
    masks, ids = objects_from_label_slice(label, min_area=5)
    assert ids.tolist() == [1] and masks[0].sum() == 9
    masks, ids = objects_from_label_slice(label, classes={2: "vessel"})
    assert ids.tolist() == [2]
    masks, ids = objects_from_label_slice(np.zeros((5, 6), np.uint8))
    assert masks.shape == (0, 5, 6) and ids.shape == (0,)


def test_label_slice_and_classes_validation():
    with pytest.raises(ValueError, match="integers"):
        objects_from_label_slice(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match=">= 0"):
        objects_from_label_slice(np.full((3, 3), -1, np.int32))
    with pytest.raises(ValueError, match="mode"):
        objects_from_label_slice(np.zeros((3, 3), np.uint8), mode="panoptic")
    assert validate_classes({"1": "liver", 2: "kidney"}) == {1: "liver", 2: "kidney"}
    with pytest.raises(ValueError, match="integers > 0"):
        validate_classes({0: "background"})
    with pytest.raises(ValueError, match="integers > 0"):
        validate_classes({"liver": 1})


def test_slices_with_objects_and_selection():
    volume = np.zeros((6, 5, 8), dtype=np.uint8)
    volume[2:4, 1:3, 1] = 1  # 4 px
    volume[0, 0, 3] = 2  # 1 px
    volume[1:5, 1:4, 6] = 1  # 12 px
    assert np.flatnonzero(slices_with_objects(volume, axis=2)).tolist() == [1, 3, 6]
    assert np.flatnonzero(slices_with_objects(volume, axis=2, min_area=2)).tolist() == [1, 6]
    assert np.flatnonzero(slices_with_objects(volume, axis=2, classes={2: "x"})).tolist() == [3]
    assert np.flatnonzero(slices_with_objects(volume, axis=0)).tolist() == [0, 1, 2, 3, 4]
    has = slices_with_objects(volume, axis=2)
    assert select_slices(has, empty_slice_rate=0.0, seed=0, key="a").tolist() == [1, 3, 6]
    assert select_slices(has, empty_slice_rate=1.0, seed=0, key="a").tolist() == list(range(8))
    half = select_slices(has, empty_slice_rate=0.5, seed=1, key="a")
    assert half.tolist() == select_slices(has, empty_slice_rate=0.5, seed=1, key="a").tolist()
    assert {1, 3, 6} <= set(half.tolist())
    with pytest.raises(ValueError, match="empty_slice_rate"):
        select_slices(has, empty_slice_rate=-0.1, seed=0, key="a")


def test_empty_slice_rate_keeps_about_that_fraction():
    has = np.zeros(4000, dtype=bool)
    kept = select_slices(has, empty_slice_rate=0.25, seed=7, key="case")
    assert 0.22 < kept.size / has.size < 0.28


def test_slice_view_writes_through_and_sample_from_slice():
    volume = np.zeros((3, 4, 5), dtype=np.uint8)
    slice_view(volume, axis=1, index=2)[:] = 7
    assert volume[:, 2, :].min() == 7 and volume.sum() == 7 * 3 * 5
    with pytest.raises(ValueError, match="out of range"):
        slice_view(volume, axis=1, index=4)
    image = np.arange(120, dtype=np.uint8).reshape(10, 12)
    sample = slice_to_sample(
        image, two_blobs_of_class_1(), meta={"file": "x.nii.gz", "image_id": 3}
    )
    assert sample.image.shape == (10, 12, 3)
    assert all(np.array_equal(sample.image[..., c], image) for c in range(3))
    assert sample.class_ids.tolist() == [1, 1, 2]
    assert sample.meta["class_names"] == {1: "1", 2: "2"} and sample.meta["image_id"] == 3
    empty = slice_to_sample(image, np.zeros((10, 12), np.uint8), classes={1: "a"})
    assert empty.masks.shape == (0, 10, 12) and empty.meta["class_names"] == {1: "a"}
