"""The predict API: sam2's own predictors on tuned models at any resolution, and the predict CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from samtune import load_predictor, load_video_predictor
from samtune.data.io import read_image as dataset_read_image
from samtune.data.io import read_size
from samtune.data.sample import DataError
from samtune.inference.prompt_files import (
    PromptError,
    load_sam2_model,
    read_image,
    read_prompts,
)
from samtune.models import CheckpointError, ModelSpec
from samtune.models.adapters import LoRAAdapter
from samtune.models.export import export_checkpoint, sidecar_path
from samtune.segmenter.sam2 import decode, encode, preprocess_like_predictor, upsample_logits
from tests.helpers import REPO, SMALL_SIZE, make_blob_sample
from tests.models.helpers import (
    NAME,
    SAM2_CONFIG,
    assert_same_predictions,
    make_lightning_checkpoint,
    run_prompts,
)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A LoRA Lightning checkpoint at 128 px and its export."""
    root = tmp_path_factory.mktemp("tuned")
    ckpt = root / "lora.ckpt"
    make_lightning_checkpoint(ckpt, LoRAAdapter(rank=4), image_size=SMALL_SIZE, seed=3)
    return ckpt, export_checkpoint(ckpt, root / "lora.pt")


def init_sam2_hydra() -> None:
    """What ``import sam2`` does (the test fixtures clear it): needed by sam2's own build_* functions."""
    from hydra import initialize_config_module

    initialize_config_module("sam2", version_base="1.2")


def test_predictor_at_small_size_matches_engine(tuned):
    _, exported = tuned
    predictor = load_predictor(str(exported))
    assert predictor.model.image_size == SMALL_SIZE
    assert predictor._bb_feat_sizes == [(32, 32), (16, 16), (8, 8)]
    image = make_blob_sample().image  # 96 x 120
    h, w = image.shape[:2]
    points, labels = np.array([[60.0, 40.0], [20.0, 80.0]]), np.array([1, 0])
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=points, point_labels=labels, multimask_output=True
    )

    # the same by hand with samtune.segmenter.sam2: coordinates scaled to the 128 px input frame
    model = predictor.model
    with torch.no_grad():
        feats = encode(model, preprocess_like_predictor([image], SMALL_SIZE))
        coords = torch.tensor(points * [SMALL_SIZE / w, SMALL_SIZE / h], dtype=torch.float32)[None]
        out = decode(
            model,
            feats,
            torch.tensor([0]),
            coords,
            torch.tensor(labels)[None],
            multimask_output=True,
        )
        ref_masks = (upsample_logits(out.low_res_logits, (h, w)) > 0)[0].numpy()
    assert masks.shape == (3, h, w)
    assert np.array_equal(masks.astype(bool), ref_masks)
    np.testing.assert_allclose(scores, out.iou_pred[0].numpy(), rtol=0, atol=1e-6)


def test_checkpoint_export_and_official_build_agree_at_small_size(tuned):
    ckpt, exported = tuned
    image = make_blob_sample(seed=1).image
    from_ckpt = run_prompts(load_predictor(str(ckpt)), image)
    from_export = run_prompts(load_predictor(str(exported)), image)
    assert_same_predictions(from_export, from_ckpt)

    # sam2's own builder and predictor at 128 px, given the hand-computed feature sizes
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    init_sam2_hydra()
    model = build_sam2(
        SAM2_CONFIG,
        str(exported),
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )
    official = SAM2ImagePredictor(model)
    official._bb_feat_sizes = [(32, 32), (16, 16), (8, 8)]
    assert_same_predictions(run_prompts(official, image), from_ckpt)


def test_load_sam2_model_sources(tuned, tiny_checkpoint, tmp_path):
    # an official checkpoint without sidecar: size recognised from the weights, resolution from spec
    model, info = load_sam2_model(str(tiny_checkpoint), ModelSpec(name=NAME, image_size=SMALL_SIZE))
    assert (info["name"], info["image_size"], info["adapter"]) == (NAME, SMALL_SIZE, None)
    assert model.image_size == SMALL_SIZE
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.*sam2.1_hiera_small"):
        load_sam2_model(
            str(tiny_checkpoint), ModelSpec(name="sam2.1_hiera_small", image_size=SMALL_SIZE)
        )
    # an exported file: size and resolution from the sidecar; image_size overrides
    _, exported = tuned
    _, info = load_sam2_model(exported)
    assert (info["name"], info["image_size"], info["adapter"]) == (NAME, SMALL_SIZE, "lora")
    model, info = load_sam2_model(exported, image_size=256)
    assert model.image_size == 256 and info["image_size"] == 256
    # a file changed after export no longer matches its sidecar
    copy = tmp_path / "copy.pt"
    copy.write_bytes(exported.read_bytes() + b"\0")
    sidecar_path(copy).write_text(sidecar_path(exported).read_text())
    with pytest.raises(CheckpointError, match="copy.pt does not match its sidecar"):
        load_sam2_model(copy)
    # none: the spec is built (random init here, as asked)
    model, info = load_sam2_model(
        "none", ModelSpec(name=NAME, image_size=SMALL_SIZE, checkpoint=None)
    )
    assert (
        info["random_init"] is True
        and info["checkpoint"] is None
        and model.image_size == SMALL_SIZE
    )


def write_frames(folder, n: int = 3) -> None:
    folder.mkdir()
    for i in range(n):
        sample = make_blob_sample(size=(80, 96), n=2, seed=7)
        frame = np.roll(sample.image, shift=3 * i, axis=1)
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)


def track(predictor, frames) -> dict[int, np.ndarray]:
    state = predictor.init_state(video_path=str(frames))
    predictor.add_new_points_or_box(
        inference_state=state,
        frame_idx=0,
        obj_id=1,
        points=np.array([[40.0, 30.0]], dtype=np.float32),
        labels=np.array([1], dtype=np.int32),
    )
    return {idx: logits.numpy().copy() for idx, _, logits in predictor.propagate_in_video(state)}


def test_video_predictor_runs_exported_model(tuned, tmp_path):
    from sam2.build_sam import build_sam2_video_predictor
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    _, exported = tuned
    frames = tmp_path / "frames"
    write_frames(frames)
    predictor = load_video_predictor(str(exported))
    assert type(predictor) is SAM2VideoPredictor and predictor.image_size == SMALL_SIZE
    ours = track(predictor, frames)
    assert sorted(ours) == [0, 1, 2]
    assert all(v.shape == (1, 1, 80, 96) and np.isfinite(v).all() for v in ours.values())

    # sam2's own video builder at the same resolution gives the same tracks
    init_sam2_hydra()
    official = build_sam2_video_predictor(
        SAM2_CONFIG,
        str(exported),
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={SMALL_SIZE}"],
    )
    assert (official.fill_hole_area, official.binarize_mask_from_pts_for_mem_enc) == (
        predictor.fill_hole_area,
        predictor.binarize_mask_from_pts_for_mem_enc,
    )
    ref = track(official, frames)
    for idx in ref:
        np.testing.assert_allclose(ours[idx], ref[idx], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------ prompts

BAD_PROMPTS = [
    (
        {"a.png": [{"points": [[130, 5]], "labels": [1]}]},
        r"image 'a.png', object 0: point \(130, 5\) is outside",
    ),
    (
        {"a.png": [{"box": [5, 5, 60, 60]}, {"box": [50, 10, 20, 40]}]},
        r"image 'a.png', object 1: box .* x2 > x1",
    ),
    (
        {"a.png": [{"points": [[5, 5], [6, 6]], "labels": [1]}]},
        r"image 'a.png', object 0: 2 points but labels",
    ),
    (
        {"missing.png": [{"box": [1, 1, 5, 5]}]},
        r"image 'missing.png' is listed but .* does not exist",
    ),
    ({"a.png": [{"boxes": [1, 1, 5, 5]}]}, r"image 'a.png', object 0: unknown keys \['boxes'\]"),
    (
        {"a.png": [{"points": [[5, 5]], "labels": [2]}]},
        r"image 'a.png', object 0: labels must be 1 .* or 0",
    ),
    ({"a.png": []}, r"image 'a.png' needs a non-empty list"),
]


def write_images(folder) -> dict[str, np.ndarray]:
    """Two small images: RGB PNG (96 x 120) and 16-bit grayscale PNG (64 x 80)."""
    folder.mkdir(exist_ok=True)
    rgb = make_blob_sample(seed=2).image
    Image.fromarray(rgb).save(folder / "a.png")
    gray = make_blob_sample(size=(64, 80), seed=4).image[..., 0].astype(np.uint16) * 200
    Image.fromarray(gray).save(folder / "b.png")
    return {"a.png": rgb, "b.png": gray}


@pytest.mark.parametrize(("prompts", "message"), BAD_PROMPTS)
def test_bad_prompts_name_image_and_problem(tmp_path, prompts, message):
    write_images(tmp_path / "images")
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    with pytest.raises(PromptError, match=message):
        read_prompts(tmp_path / "prompts.json", tmp_path / "images")


def run_cli(*args: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "samtune.cli.predict", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def check_outputs(out, results: list[dict], images: dict[str, np.ndarray]) -> None:
    from pycocotools import mask as mask_utils

    for r in results:
        png = np.asarray(Image.open(out / r["mask_file"]))
        assert r["mask_file"] == f"{r['file_name'][:-4]}_{r['object']}.png"
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        decoded = mask_utils.decode(rle)
        assert decoded.shape == images[r["file_name"]].shape[:2]
        assert np.array_equal(decoded.astype(bool), png == 255)
        assert r["area"] == decoded.sum() and np.isfinite(r["score"])


def test_predict_cli_writes_pngs_equal_to_rle(tuned, tmp_path):
    _, exported = tuned
    images = write_images(tmp_path / "images")
    prompts = {
        "a.png": [{"points": [[60, 40], [20, 80]], "labels": [1, 0]}, {"box": [30, 20, 90, 70]}],
        "b.png": [{"box": [10, 10, 50, 40], "points": [[30, 25]]}],
    }
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    proc = run_cli(
        f"ckpt={exported}",
        f"images={tmp_path / 'images'}",
        f"prompts={tmp_path / 'prompts.json'}",
        f"out={out}",
        "multimask=true",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "masks.json").read_text())
    assert [(r["file_name"], r["object"]) for r in results] == [
        ("a.png", 0),
        ("a.png", 1),
        ("b.png", 0),
    ]
    check_outputs(out, results, images)

    # the CLI's first mask is the best of three from samtune's own predictor
    predictor = load_predictor(str(exported))
    predictor.set_image(images["a.png"])
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[60, 40], [20, 80]]), point_labels=np.array([1, 0])
    )
    png = np.asarray(Image.open(out / "a_0.png")) == 255
    assert np.array_equal(png, masks[np.argmax(scores)] > 0.5)
    assert results[0]["score"] == pytest.approx(float(scores.max()), abs=1e-6)


def test_predict_cli_auto_mode(tuned, tmp_path):
    _, exported = tuned
    images = write_images(tmp_path / "images")
    out = tmp_path / "out"
    proc = run_cli(
        f"ckpt={exported}",
        f"images={tmp_path / 'images'}",
        f"out={out}",
        "mode=auto",
        "auto.points_per_side=4",
        "auto.pred_iou_thresh=0.0",
        "auto.stability_score_thresh=0.0",
        tmp_path=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "masks.json").read_text())
    assert results and {r["file_name"] for r in results} <= {"a.png", "b.png"}
    check_outputs(out, results, images)


def test_predict_cli_bad_prompt_fails_before_writing(tuned, tmp_path):
    ckpt, _ = tuned
    write_images(tmp_path / "images")
    prompts = {
        "a.png": [{"box": [30, 20, 90, 70]}],
        "b.png": [{"points": [[200, 10]], "labels": [1]}],
    }
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "out"
    proc = run_cli(
        f"ckpt={ckpt}",
        f"images={tmp_path / 'images'}",
        f"prompts={tmp_path / 'prompts.json'}",
        f"out={out}",
        tmp_path=tmp_path,
    )
    assert proc.returncode != 0
    assert (
        "image 'b.png', object 0: point (200, 10) is outside the 80x64 (WxH) image" in proc.stderr
    )
    assert not out.exists()  # checked before any output was written


def test_read_image_converts_to_rgb_uint8(tmp_path):
    import tifffile

    gray16 = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 100 + 500
    Image.fromarray(gray16).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (12, 10, 3) and img.dtype == np.uint8
    # the prediction CLI reads images exactly as the training datasets do

    assert np.array_equal(img, dataset_read_image(tmp_path / "g.png"))
    assert (
        img[..., 0].min() == 0
        and img[..., 0].max() == 255
        and np.array_equal(img[..., 0], img[..., 2])
    )
    chw = np.random.default_rng(0).random((3, 12, 10)).astype(np.float32)
    tifffile.imwrite(tmp_path / "c.tif", chw)
    assert read_image(tmp_path / "c.tif").shape == (12, 10, 3)
    assert read_size(tmp_path / "c.tif") == (12, 10)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.png.*cannot read image"):
        read_image(tmp_path / "bad.png")
