"""Folder prediction through the ``samtune-predict`` CLI: prompted and automatic masks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from samtune import load_predictor
from samtune.data.io import read_image as dataset_read_image
from samtune.data.io import read_size
from samtune.data.sample import DataError
from samtune.inference.folder import read_image
from tests.helpers import REPO, SMALL_SIZE
from tests.inference.helpers import write_images


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


def test_model_image_size_is_the_resolution_key_of_predict(tuned, tmp_path):
    """``model.image_size=N`` sets predict's resolution as it does train's and eval's, with or
    without ``model=<size>``; the older ``image_size=N`` is the same key, and the two spellings
    may not disagree."""
    _, exported = tuned
    write_images(tmp_path / "images")
    prompts = {"a.png": [{"box": [30, 20, 90, 70]}]}
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    common = [
        f"ckpt={exported}",
        f"images={tmp_path / 'images'}",
        f"prompts={tmp_path / 'prompts.json'}",
    ]
    asked = SMALL_SIZE + 64
    outputs = {}
    for name, extra in {
        "model_key": [f"model.image_size={asked}"],
        "model_key_with_model": ["model=sam2.1_hiera_tiny", f"model.image_size={asked}"],
        "plain_key": [f"image_size={asked}"],
    }.items():
        proc = run_cli(*common, f"out={tmp_path / name}", *extra, tmp_path=tmp_path / f"run_{name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (
            f"recorded image_size {SMALL_SIZE}, using {asked} as asked" in proc.stdout + proc.stderr
        ), name
        outputs[name] = np.asarray(Image.open(tmp_path / name / "a_0.png"))
    assert np.array_equal(outputs["model_key"], outputs["plain_key"])
    assert np.array_equal(outputs["model_key"], outputs["model_key_with_model"])

    proc = run_cli(
        *common,
        f"out={tmp_path / 'both'}",
        "model=sam2.1_hiera_tiny",
        f"model.image_size={asked}",
        f"image_size={SMALL_SIZE}",
        tmp_path=tmp_path / "run_both",
    )
    assert proc.returncode != 0
    assert (
        f"image_size={SMALL_SIZE} and model.image_size={asked} disagree"
        in proc.stdout + proc.stderr
    )
    assert not (tmp_path / "both").exists()
