"""samtune-predict on a video folder or a volume: prompts on one frame, masks on every frame,
held equal to the official SAM2VideoPredictor; label volumes keep the input's geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from samtune.data.datasets.volumes import read_geometry, read_volume
from samtune.inference.clip_files import read_clip_input, write_label_volume
from samtune.inference.clip_prompts import read_clip_prompts
from samtune.inference.predictor import load_video_predictor
from samtune.inference.prompt_files import PromptError
from samtune.inference.video import predict_clip, run_predict_video
from tests.data.clip_layouts import VOLUME_FORMATS, make_moving_clip, write_volume
from tests.helpers import SMALL_SIZE
from tests.inference.test_predictor import init_sam2_hydra
from tests.models.helpers import SAM2_CONFIG

PROMPTS = {
    "frame": 1,
    "objects": [{"id": 1, "points": [[16, 16]], "labels": [1]}, {"id": 9, "box": [40, 8, 56, 24]}],
}


def write_jpegs(folder, n: int = 4):
    scene = make_moving_clip(3, n_frames=n, size=(48, 64))
    folder.mkdir(parents=True)
    for t, frame in enumerate(scene.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return scene


def test_prompts_file_is_checked_against_the_frames(tmp_path):
    path = tmp_path / "p.json"
    names = ["a.png", "b.png", "c.png"]

    def read(content):
        path.write_text(json.dumps(content))
        return read_clip_prompts(path, frame_names=names, size=(20, 30))

    parsed = read(
        [{"frame": "b.png", "objects": [{"points": [[3, 4]]}, {"id": 5, "box": [0, 0, 9, 9]}]}]
    )
    assert parsed[0].frame == 1 and [i for i, _ in parsed[0].objects] == [1, 5]
    for content, message in [
        ({"frame": 3, "objects": [{"box": [0, 0, 5, 5]}]}, "frame 3 is out of range; the video has 3"),
        ({"frame": "z.png", "objects": [{"box": [0, 0, 5, 5]}]}, "no frame named 'z.png'"),
        ({"frame": 0, "objects": [{"id": 256, "box": [0, 0, 5, 5]}]}, "from 1 to 255, got 256"),
        ({"frame": 0, "objects": [{"id": 2, "box": [0, 0, 5, 5]}, {"id": 2, "box": [1, 1, 5, 5]}]}, "id 2 is given twice"),
        ({"frame": 0, "objects": [{"points": [[31, 2]]}]}, r"point \(31, 2\) is outside the 30x20"),
        ({"objects": []}, "needs exactly 'frame' and 'objects'"),
    ]:  # fmt: skip
        with pytest.raises(PromptError, match=message):
            read(content)


def official_labels(predictor, folder, prompts, num_frames):
    """SAM 2's own loop: init_state on the JPEG folder, the prompts, forwards then backwards."""
    state = predictor.init_state(video_path=str(folder))
    for obj in prompts["objects"]:
        predictor.add_new_points_or_box(
            inference_state=state,
            frame_idx=prompts["frame"],
            obj_id=obj["id"],
            points=np.array(obj["points"], np.float32) if "points" in obj else None,
            labels=np.array(obj["labels"], np.int32) if "points" in obj else None,
            box=np.array(obj["box"], np.float32) if "box" in obj else None,
        )
    logits = {}
    for reverse in (False, True):
        for idx, ids, out in predictor.propagate_in_video(state, prompts["frame"], reverse=reverse):
            logits.setdefault(idx, (ids, out[:, 0].numpy()))
    labels = []
    for t in range(num_frames):
        ids, scores = logits[t]
        top = scores.argmax(0)
        best = np.take_along_axis(scores, top[None], 0)[0]
        labels.append(np.where(best > 0, np.asarray(ids)[top], 0))
    return np.stack(labels)


def test_predict_clip_equals_the_official_video_predictor(tuned, tmp_path):
    from sam2.build_sam import build_sam2_video_predictor

    _, exported = tuned
    folder = tmp_path / "video"
    write_jpegs(folder, n=3)
    (tmp_path / "p.json").write_text(json.dumps(PROMPTS))
    clip = read_clip_input(folder)
    prompts = read_clip_prompts(tmp_path / "p.json", frame_names=clip.names, size=(48, 64))
    predictor = load_video_predictor(str(exported))
    assert predictor.image_size == SMALL_SIZE
    import torch

    with torch.inference_mode():
        ours = predict_clip(predictor, clip.frames, prompts)
    init_sam2_hydra()
    official = build_sam2_video_predictor(
        SAM2_CONFIG, str(exported), device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )  # fmt: skip
    with torch.inference_mode():
        ref = official_labels(official, folder, PROMPTS, 3)
    assert ours.shape == (3, 48, 64)
    assert np.array_equal(ours, ref)
    assert set(np.unique(ours)) <= {0, 1, 9}


def test_predict_volume_writes_a_label_volume_on_its_grid(tuned, tmp_path):
    _, exported = tuned
    image, _ = write_volume(tmp_path / "vol", "nifti")
    (tmp_path / "p.json").write_text(json.dumps({"frame": 3, "objects": [{"box": [4, 4, 20, 22]}]}))
    out = tmp_path / "out"
    summary = run_predict_video(
        ckpt=str(exported), video=image, prompts=tmp_path / "p.json", out=out, window="abdomen"
    )
    written = out / "case00_seg.nii.gz"
    assert json.loads(summary.read_text())["files"] == ["case00_seg.nii.gz"]
    assert read_geometry(written).shape == read_geometry(image).shape
    np.testing.assert_allclose(read_geometry(written).affine, read_geometry(image).affine)
    labels = read_volume(written, label=True).array
    assert set(np.unique(labels)) <= {0, 1}
    # a bad prompt is refused before the model loads or anything is written
    (tmp_path / "bad.json").write_text(json.dumps({"frame": 6, "objects": [{"box": [1, 1, 5, 5]}]}))
    with pytest.raises(PromptError, match="frame 6 is out of range"):
        run_predict_video(
            ckpt="missing.pt", video=image, prompts=tmp_path / "bad.json", out=tmp_path / "o2"
        )
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("fmt", VOLUME_FORMATS)
def test_label_volumes_keep_the_input_geometry_and_format(tmp_path, fmt):
    image, _ = write_volume(tmp_path, fmt)
    source = read_volume(image)
    labels = np.zeros(source.array.shape, np.uint8)
    labels[2:9, 3:7, 1:4] = 3
    path = write_label_volume(tmp_path / "out", source, labels)
    expected = {"nifti": "case00_seg.nii.gz", "nrrd": "case00_seg.nrrd", "mha": "case00_seg.mha",
                "tiff": "case00_seg.tif", "dicom": "case00_seg.nii.gz"}[fmt]  # fmt: skip
    assert path.name == expected and sorted(p.name for p in path.parent.iterdir()) == [expected]
    back = read_volume(path, label=True)
    assert np.array_equal(back.array, labels)
    np.testing.assert_allclose(back.spacing, source.spacing, rtol=1e-5)
    assert back.spacing_unit == source.spacing_unit  # mm, or "pixel" for an uncalibrated stack
    if fmt != "tiff":  # a TIFF stack has no orientation or origin
        np.testing.assert_allclose(back.affine, source.affine, atol=1e-4)
