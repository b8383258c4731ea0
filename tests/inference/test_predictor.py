"""Loading tuned models into sam2's own image and video predictors, at any resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from samtune import load_predictor, load_video_predictor
from samtune.models import CheckpointError, ModelSpec
from samtune.models.export import sidecar_path
from samtune.models.weights import load_model
from samtune.segmenter.sam2 import decode, encode, preprocess_like_predictor, upsample_logits
from tests.helpers import SMALL_SIZE, make_blob_sample
from tests.models.helpers import (
    NAME,
    SAM2_CONFIG,
    assert_same_predictions,
    run_prompts,
)


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


def test_load_model_sources(tuned, tiny_checkpoint, tmp_path):
    # an official checkpoint without sidecar: size recognised from the weights, resolution from spec
    model, info = load_model(str(tiny_checkpoint), ModelSpec(name=NAME, image_size=SMALL_SIZE))
    assert (info["name"], info["image_size"], info["adapter"]) == (NAME, SMALL_SIZE, None)
    assert model.image_size == SMALL_SIZE
    with pytest.raises(CheckpointError, match="sam2.1_hiera_tiny.*sam2.1_hiera_small"):
        load_model(
            str(tiny_checkpoint), ModelSpec(name="sam2.1_hiera_small", image_size=SMALL_SIZE)
        )
    # an exported file: size and resolution from the sidecar; image_size overrides
    _, exported = tuned
    _, info = load_model(exported)
    assert (info["name"], info["image_size"], info["adapter"]) == (NAME, SMALL_SIZE, "lora")
    model, info = load_model(exported, image_size=256)
    assert model.image_size == 256 and info["image_size"] == 256
    # a file changed after export no longer matches its sidecar
    copy = tmp_path / "copy.pt"
    copy.write_bytes(exported.read_bytes() + b"\0")
    sidecar_path(copy).write_text(sidecar_path(exported).read_text())
    with pytest.raises(CheckpointError, match="copy.pt does not match its sidecar"):
        load_model(copy)
    # none: the spec is built (random init here, as asked)
    model, info = load_model("none", ModelSpec(name=NAME, image_size=SMALL_SIZE, checkpoint=None))
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
