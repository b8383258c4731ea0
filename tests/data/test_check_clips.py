"""samtune-check-data on clip layouts: counts of videos, frames, annotated frames and tracks, and
every bad frame or label file named."""

from __future__ import annotations

import numpy as np
from PIL import Image

from samtune.data.check import check_datamodule, format_check
from samtune.data.datamodules.ctc import CtcDataModule
from samtune.data.datamodules.frames import FramesDataModule
from samtune.data.datamodules.vos import VosDataModule
from tests.data.clip_layouts import write_ctc, write_frames, write_vos


def test_vos_counts_and_bad_files(tmp_path):
    write_vos(tmp_path, "youtube", {"train": 3}, n_frames=6)
    bad_frame = tmp_path / "train" / "JPEGImages" / "train-video1" / "00010.jpg"
    bad_frame.write_bytes(b"not a jpeg")
    wrong = tmp_path / "train" / "Annotations" / "train-video2" / "00020.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(wrong)
    dm = VosDataModule(root=tmp_path, image_size=64, num_frames=3, val_fraction=0, on_error="skip")
    report = check_datamodule(dm, splits=["train"])
    entry = report["splits"]["train"]
    assert (entry["videos"], entry["frames"], entry["annotated_frames"]) == (3, 18, 9)
    assert entry["tracks"] == 9 and entry["read"] == 1
    assert entry["classes"]["2"] == {"name": "cell", "objects": 6, "images": 3}
    assert not report["ok"] and {p["file"] for p in report["problems"]} == {
        str(bad_frame.parent),
        str(wrong.parent.parent.parent / "JPEGImages" / "train-video2"),
    }
    text = format_check(report)
    assert "cannot read image" in text and "00020.png: label map is 5x5" in text
    assert "tracks (objects kept across frames): 9" in text and text.endswith(
        "bad files or splits)"
    )


def test_ctc_and_frames_counts(tmp_path):
    write_ctc(tmp_path / "ctc", n_frames=6, seg_frames=(0, 3))
    dm = CtcDataModule(
        root=tmp_path / "ctc", image_size=64, num_frames=3, val_fraction=0, truth="gold"
    )
    report = check_datamodule(dm, splits=["train"])
    entry = report["splits"]["train"]
    assert report["ok"] and entry["annotated_frames"] == 2 and entry["tracks"] == 3
    assert entry["time_lapse"] == {"untracked_segments": 1, "marker_masks": 1}
    assert "1 segments without a track marker" in format_check(report)
    write_frames(tmp_path / "frames", n_videos=2, n_frames=3)
    frames = FramesDataModule(
        images=tmp_path / "frames" / "images", labels=tmp_path / "frames" / "labels",
        image_size=64, num_frames=4, val_fraction=0,
    )  # fmt: skip
    entry = check_datamodule(frames, splits=["train"])["splits"]["train"]
    # 3 frames cannot give a clip of 4: both videos are left out of training, and counted
    assert entry["videos"] == 0 and entry["dataset_stats"]["too_short"] == 2
    assert entry["drops"]["too_short"] == 2 and entry["usable_images"] == 0
    assert "2 video(s) are shorter than one training clip" in entry["unusable"]
