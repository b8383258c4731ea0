"""Volumes of every format as clips of their slices, read through the volume datasets' code."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datasets.videos import ClipSampling, VolumeClipDataset
from samtune.data.datasets.videos.volumes import object_map
from samtune.data.datasets.volumes import VolumeSliceDataset
from tests.data.clip_layouts import VOLUME_FORMATS, write_volume


@pytest.mark.parametrize("fmt", VOLUME_FORMATS)
def test_every_volume_format_gives_the_slices_of_data_volumes(tmp_path, fmt):
    write_volume(tmp_path, fmt)
    options = dict(images=tmp_path / "images", labels=tmp_path / "labels", window="abdomen")
    clips = VolumeClipDataset(**options, mode="semantic")
    slices = VolumeSliceDataset(**options, mode="semantic", empty_slice_rate=1.0)
    clip = clips[0]
    assert clip.num_frames == len(slices)
    for t in range(clip.num_frames):
        sample = slices[t]
        assert np.array_equal(clip.frames[t], sample.image)
        present = clip.present[:, t]
        assert np.array_equal(clip.masks[present, t], sample.masks)
        assert clip.class_ids[present].tolist() == sample.class_ids.tolist()
    geometry = clips.slices.pairs[0].geometry
    axis = 2
    assert clip.meta["spacing"] == pytest.approx(
        (geometry.spacing[2], geometry.spacing[0], geometry.spacing[1])
    )
    assert clip.meta["axis"] == axis and clip.meta["spacing_unit"] == "mm"
    assert clip.meta["volume_spacing"] == pytest.approx(geometry.spacing)


def test_instance_objects_are_3d_regions_with_ids_stable_across_clips(tmp_path):
    write_volume(tmp_path, "nifti")
    data = VolumeClipDataset(images=tmp_path / "images", labels=tmp_path / "labels")
    whole = data[0]
    assert whole.object_ids.tolist() == [1, 2] and whole.class_ids.tolist() == [1, 2]
    assert whole.present.tolist() == [
        [False, True, True, True, True, False],
        [False, False, True, True, True, False],
    ]
    sampled = VolumeClipDataset(
        images=tmp_path / "images",
        labels=tmp_path / "labels",
        sampling=ClipSampling(num_frames=3, start="key", max_num_objects=2),
    )
    for i in range(4):
        clip = sampled[(i, 0)]
        frames = clip.meta["frame_indices"]
        for n, object_id in enumerate(clip.object_ids.tolist()):
            k = whole.object_ids.tolist().index(object_id)
            assert np.array_equal(clip.masks[n], whole.masks[k, frames])
    # two regions of one class are two objects; semantic mode makes them one
    label = np.zeros((6, 8, 8), np.uint8)
    label[0:2, 0:2, 0:2] = 4
    label[4:6, 5:7, 5:7] = 4
    label[2:4, 0:3, 0:3] = 1
    ids, classes = object_map(label, axis=0, mode="instance", classes=None)
    assert classes == {1: 1, 2: 4, 3: 4}
    assert len(np.unique(ids[label == 4])) == 2
    ids, classes = object_map(label, axis=0, mode="semantic", classes={4: "x"})
    assert classes == {4: 4} and (ids[label == 1] == 0).all()
    ids, _ = object_map(label, axis=0, mode="semantic", classes=None, min_area=5)
    assert (ids[0] == 0).all() and (ids[2] == 1).sum() == 9  # 4 pixels per slice: absent there
