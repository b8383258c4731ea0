"""DAVIS, MOSE and YouTube-VOS folders read as they ship, and their bad files named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from samtune.data.datasets.videos import VosDataset
from samtune.data.sample import DataError
from tests.data.clip_layouts import VOID, write_vos


def assert_matches(clip, truth, positions):
    """The clip's masks are the truth's label values, object by object, on ``positions``, and
    its frames the JPEG files as PIL decodes them."""
    for n, object_id in enumerate(clip.object_ids.tolist()):
        assert np.array_equal(clip.masks[n], truth.labels[positions] == object_id), object_id
    folder = Path(clip.meta["file"])
    for t, name in enumerate(clip.meta["frame_files"]):
        assert np.array_equal(clip.frames[t], np.array(Image.open(folder / name).convert("RGB")))


def test_davis_480p_list_files_and_void(tmp_path):
    truth = write_vos(tmp_path, "davis", {"train": 2, "val": 1})
    train = VosDataset(root=tmp_path, split="train")
    assert [s.name for s in train.sources] == ["train-video0", "train-video1"]
    assert train.images_dir == tmp_path / "JPEGImages" / "480p"
    clip = train[1]
    assert clip.object_ids.tolist() == [1, 2, 3]  # 255 (void) is no object
    assert clip.meta["frame_files"][0] == "00000.jpg" and clip.annotated.all()
    assert_matches(clip, truth["train"]["train-video1"], list(range(6)))
    assert clip.present[1].tolist() == [True, True, True, False, True, True]  # occluded on 3
    val = VosDataset(root=tmp_path, split="val")
    assert [s.name for s in val.sources] == ["val-video0"]
    everything = VosDataset(root=tmp_path)
    assert len(everything) == 3
    with_void = VosDataset(root=tmp_path, split="val", void_value=None)
    assert VOID in with_void[0].object_ids.tolist()


def test_mose_split_folders(tmp_path):
    truth = write_vos(tmp_path, "mose", {"train": 2})
    data = VosDataset(root=tmp_path, split="train")
    assert len(data) == 2 and data.images_dir == tmp_path / "train" / "JPEGImages"
    assert_matches(data[0], truth["train"]["train-video0"], list(range(6)))


def test_youtube_sparse_annotations_and_categories(tmp_path):
    truth = write_vos(tmp_path, "youtube", {"train": 1}, n_frames=6)
    clip = VosDataset(root=tmp_path, split="train")[0]
    assert clip.meta["frame_files"] == [f"{5 * t:05d}.jpg" for t in range(6)]
    assert clip.annotated.tolist() == [True, False, True, False, True, False]
    assert not clip.masks[:, ~clip.annotated].any()  # nothing on frames without annotation
    assert_matches(clip.sub([0, 2, 4]), truth["train"]["train-video0"], [0, 2, 4])
    assert clip.meta["class_names"] == {1: "ape", 2: "cell"}
    assert dict(zip(clip.object_ids.tolist(), clip.class_ids.tolist())) == {1: 2, 2: 1, 3: 2}
    assert clip.frame(2).meta["object_ids"] == [1, 2, 3]


def test_bad_files_are_named(tmp_path):
    write_vos(tmp_path, "davis", {"train": 2})
    davis = tmp_path
    listed = davis / "ImageSets" / "2017" / "train.txt"
    listed.write_text(listed.read_text() + "ghost\n")
    with pytest.raises(DataError, match="ghost: listed in .*train.txt but there is no such folder"):
        VosDataset(root=davis, split="train")
    with pytest.warns(UserWarning, match="ghost"):
        skipping = VosDataset(root=davis, split="train", on_error="skip")
    assert len(skipping) == 2 and len(skipping.skipped) == 1
    stray = davis / "Annotations" / "480p" / "train-video0" / "00042.png"
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(stray)
    with pytest.raises(DataError, match="00042.png: label map without a frame"):
        VosDataset(root=davis)
    stray.unlink()
    small = davis / "Annotations" / "480p" / "train-video0" / "00002.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    data = VosDataset(root=davis)
    with pytest.raises(DataError, match="00002.png: label map is 10x10 .*00002.jpg is 48x64"):
        data[0]
    with pytest.raises(DataError, match="no split 'test'.*ImageSets/2017/test.txt"):
        VosDataset(root=davis, split="test")
    with pytest.raises(DataError, match="no JPEGImages/ folder"):
        VosDataset(root=davis / "ImageSets")
