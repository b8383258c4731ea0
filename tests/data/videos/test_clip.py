"""The Clip helpers the readers build on: label maps to masks, cuts, reversal, object choice."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.clip import Clip
from samtune.data.sample import DataError
from tests.data.clip_layouts import make_moving_clip


def test_from_label_maps_makes_one_mask_per_id_in_the_order_asked():
    scene = make_moving_clip(0, n_frames=5, size=(32, 40))
    clip = Clip.from_label_maps(
        scene.frames, scene.labels, [3, 1], class_ids=[2, 1], meta={"file": "v", "clip_id": "v"}
    )
    assert clip.masks.shape == (2, 5, 32, 40)
    assert np.array_equal(clip.masks[0], scene.labels == 3)
    assert np.array_equal(clip.masks[1], scene.labels == 1)
    assert clip.object_ids.tolist() == [3, 1] and clip.class_ids.tolist() == [2, 1]
    assert clip.present[0].tolist() == [False, False, True, True, True]
    with pytest.raises(DataError, match="v: label maps are"):
        Clip.from_label_maps(scene.frames, scene.labels[:, :10], [1], meta={"file": "v"})


def test_sub_reversed_and_with_objects_cut_every_field_alike():
    scene = make_moving_clip(1, n_frames=6, size=(24, 48))
    meta = {
        "file": "v",
        "frame_indices": list(range(6)),
        "frame_files": [f"{t}.jpg" for t in range(6)],
    }
    clip = Clip.from_label_maps(
        scene.frames, scene.labels, [1, 2, 3], annotated=[1, 0, 1, 1, 0, 1], meta=meta
    )
    cut = clip.sub([4, 2, 0])
    assert np.array_equal(cut.frames, scene.frames[[4, 2, 0]])
    assert np.array_equal(cut.masks[1], scene.labels[[4, 2, 0]] == 2)
    assert cut.annotated.tolist() == [False, True, True]
    assert cut.meta["frame_indices"] == [4, 2, 0] and cut.meta["frame_files"][0] == "4.jpg"
    back = clip.reversed()
    assert back.meta["frame_indices"] == [5, 4, 3, 2, 1, 0]
    assert np.array_equal(back.masks[:, 0], clip.masks[:, 5])
    assert clip.meta["frame_indices"] == list(range(6))  # the original is untouched
    two = clip.with_objects([2, 0])
    assert two.object_ids.tolist() == [3, 1] and np.array_equal(two.masks[0], clip.masks[2])
    with pytest.raises(IndexError):
        clip.sub([6])
