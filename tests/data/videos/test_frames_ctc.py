"""Plain frame folders and Cell Tracking Challenge sequences as clips."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datasets.videos import CtcDataset, FramesDataset
from samtune.data.datasets.videos.ctc import match_segments
from samtune.data.sample import DataError
from tests.data.clip_layouts import write_ctc, write_frames


def test_frame_folders_pair_labels_by_stem_and_suffix(tmp_path):
    truth = write_frames(tmp_path, n_videos=2, n_frames=5)
    data = FramesDataset(images=tmp_path / "images", labels=tmp_path / "labels")
    assert [s.name for s in data.sources] == ["movie0", "movie1"]
    for k, name in enumerate(["movie0", "movie1"]):
        clip = data[k]
        assert clip.annotated.tolist() == [True, False, True, True, True]
        assert clip.meta["frame_files"] == [f"f{t}.png" for t in range(5)]
        for n, object_id in enumerate(clip.object_ids.tolist()):
            expected = truth[name].labels == object_id
            expected[1] = False  # frame 1 has no label image
            assert np.array_equal(clip.masks[n], expected)
    assert np.array_equal(data[0].frames, truth["movie0"].frames)
    assert data[1].frames.dtype == np.uint8  # 16-bit grey frames converted
    one = FramesDataset(
        images=tmp_path / "images" / "movie0", labels=tmp_path / "labels" / "movie0"
    )
    assert len(one) == 1 and one.sources[0].name == "movie0"
    with pytest.raises(DataError, match="no such folder"):
        FramesDataset(images=tmp_path / "nowhere", labels=tmp_path / "labels")


def test_match_segments_by_marker_overlap():
    seg = np.zeros((10, 10), np.int64)
    tra = np.zeros((10, 10), np.int64)
    seg[0:4, 0:4] = 7  # holds all of marker 3
    tra[1:3, 1:3] = 3
    seg[5:9, 5:9] = 8  # holds only 1 of marker 4's 4 pixels: not its segment
    tra[8:10, 8:10] = 4
    seg[0:2, 7:9] = 9  # no marker at all
    tra[5, 0] = 6  # a marker without a segment
    labels, untracked, from_markers = match_segments(seg, tra)
    assert np.array_equal(labels == 3, seg == 7)
    assert untracked == 2 and from_markers == [4, 6]
    assert (labels[tra == 4] == 4).all() and labels[5, 0] == 6


def test_ctc_tracks_give_identities_across_renumbered_segmentations(tmp_path):
    truth = write_ctc(tmp_path, n_frames=6, seg_frames=(0, 3))
    gold = CtcDataset(root=tmp_path, truth="gold")
    clip = gold[0]
    assert clip.annotated.tolist() == [True, False, False, True, False, False]
    assert clip.meta["truth"] == ["gold", None, None, "gold", None, None]
    assert clip.object_ids.tolist() == [1, 2, 3]
    assert clip.meta["tracks"][2] == [0, 5, 0] and clip.meta["class_names"] == {1: "cell"}
    for n, track in enumerate([1, 2, 3]):
        if track != 1:
            assert np.array_equal(clip.masks[n, 0], truth.labels[0] == track)
            assert np.array_equal(clip.masks[n, 3], truth.labels[3] == track)
    assert np.array_equal(clip.masks[0, 0], truth.labels[0] == 1)
    # cell 1 is not segmented on frame 3: its 3x3 marker stands in, and meta says so
    assert clip.masks[0, 3].sum() == 9 and clip.meta["marker_masks"] == [[1, 3]]
    assert clip.meta["untracked_segments"] == 1  # the speck on frame 0
    both = CtcDataset(root=tmp_path)[0]
    assert both.annotated.all()
    assert both.meta["truth"] == ["gold", "silver", "silver", "gold", "silver", "silver"]
    assert np.array_equal(both.masks[1, 1], truth.labels[1] == 2)
    silver = CtcDataset(root=tmp_path, truth="silver")[0]
    assert np.array_equal(silver.masks[0, 3], truth.labels[3] == 1)
    with pytest.raises(DataError, match="no CTC sequence '02'"):
        CtcDataset(root=tmp_path, sequences=["02"])
    (tmp_path / "01_GT" / "TRA" / "man_track.txt").write_text("1 0 x 0\n")
    with pytest.raises(DataError, match="man_track.txt: line 1 is '1 0 x 0'"):
        CtcDataset(root=tmp_path)
