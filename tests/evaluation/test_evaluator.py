"""The batched Evaluator against the official SAM2ImagePredictor driven one object at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samtune.data.sample import Sample
from samtune.evaluation import Evaluator, center_points, error_center_clicks
from samtune.evaluation.evaluator import accelerator_decode_chunk, cpu_decode_chunk
from samtune.metrics import mask_iou, number_of_clicks
from samtune.models import build_sam2_model
from samtune.prompts import mask_to_box
from samtune.segmenter.sam2 import Features, feature_sizes
from tests.helpers import make_blob_sample

MAX_CLICKS = 3


def _samples() -> list[Sample]:
    # three sizes (none square, one larger than the model's 128 px input), 2-4 objects each
    return [
        make_blob_sample((96, 120), n=3, seed=0),
        make_blob_sample((80, 64), n=2, seed=1),
        make_blob_sample((150, 110), n=4, seed=2),
    ]


def _predictor_reference(model, samples: list[Sample]) -> dict:
    """What application code gets from SAM2ImagePredictor, object by object, for each protocol."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = feature_sizes(model)
    ref = {}
    for sample in samples:
        predictor.set_image(sample.image)
        gt = torch.from_numpy(sample.masks)
        centers, boxes = center_points(gt).numpy(), mask_to_box(gt).numpy()
        key = sample.meta["image_id"]
        for i in range(gt.shape[0]):
            masks, ious, low = predictor.predict(
                point_coords=centers[i : i + 1], point_labels=np.array([1]), multimask_output=True
            )
            best = int(np.argmax(ious))
            ref["point1", key, i] = (masks[best] > 0, float(ious[best]))
            masks, ious, _ = predictor.predict(box=boxes[i], multimask_output=False)
            ref["box", key, i] = (masks[0] > 0, float(ious[0]))
            # clicks: start as point1, then correction clicks with the previous logits as mask input
            pts, lbl = centers[i : i + 1], np.array([1])
            mask, mask_input, curve = ref["point1", key, i][0], low[best : best + 1], []
            curve.append(mask_iou(torch.from_numpy(mask), gt[i]).item())
            for _ in range(MAX_CLICKS - 1):
                p, lab = error_center_clicks(torch.from_numpy(mask)[None], gt[i : i + 1])
                pts, lbl = (
                    np.concatenate([pts, p[0].numpy()]),
                    np.concatenate([lbl, lab[0].numpy()]),
                )
                masks, ious, low = predictor.predict(
                    point_coords=pts,
                    point_labels=lbl,
                    mask_input=mask_input,
                    multimask_output=False,
                )
                mask, mask_input = masks[0] > 0, low
                curve.append(mask_iou(torch.from_numpy(mask), gt[i]).item())
            ref["clicks", key, i] = (mask, float(ious[0]), curve)
    return ref


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    """One sam2.1_hiera_tiny at 128 px for the whole module (the evaluator never changes it)."""

    return build_sam2_model("sam2.1_hiera_tiny", image_size=128, checkpoint=tiny_checkpoint)


@pytest.fixture(scope="module")
def evaluated(model):
    """Three images of different sizes in batches of 2 (a full and a partial batch)."""
    samples = _samples()
    evaluator = Evaluator(max_clicks=MAX_CLICKS, image_batch=2, progress=False, keep_masks=True)
    return samples, evaluator.evaluate(model, samples)


@pytest.fixture(scope="module")
def reference(model):
    """The predictor's masks for the same samples, one object at a time."""
    return _predictor_reference(model, _samples())


def test_batched_evaluation_equals_the_official_predictor(evaluated, reference):
    samples, result = evaluated
    ref = reference

    assert len(result.rows) == 3 * 9 and result.images == 3
    pixels = differing = 0
    for row in result.rows:
        expected = ref[row.protocol, row.image_id, row.object]
        pixels += expected[0].size
        differing += int((row.mask != expected[0]).sum())
        assert row.mask.shape == samples[row.image_id].masks.shape[1:]
        assert row.pred_iou == pytest.approx(expected[1], abs=1e-5)
        if row.protocol == "clicks":
            assert row.iou_per_click == pytest.approx(expected[2], abs=5e-3)
    # batching over objects and images changes float rounding in the decoder (~1e-7), which
    # may flip a pixel sitting exactly on the threshold; in practice at most a pixel or two
    assert differing / pixels <= 1e-3
    print(f"{differing} of {pixels} mask pixels differ from the predictor's")


def test_one_object_per_decode_is_bit_identical_to_the_predictor(model, reference):
    samples = _samples()[:2]
    # one image per encoder call, as the predictor encodes: on CPUs with AVX-512/AMX kernels a
    # batch of two images rounds the encoder's output differently in the last bit
    evaluator = Evaluator(
        max_clicks=MAX_CLICKS, image_batch=1, progress=False, keep_masks=True, objects_per_decode=1
    )
    result = evaluator.evaluate(model, samples)
    ref = reference
    assert len(result.rows) == 3 * 5
    for row in result.rows:
        mask, pred_iou = ref[row.protocol, row.image_id, row.object][:2]
        assert np.array_equal(row.mask, mask), (row.protocol, row.image_id, row.object)
        assert row.pred_iou == pred_iou
        if row.protocol == "clicks":
            assert row.iou_per_click == ref[row.protocol, row.image_id, row.object][2]


def test_rows_and_aggregates_are_consistent(evaluated):
    samples, result = evaluated
    by_key = {(r.protocol, r.image_id, r.object): r for r in result.rows}
    clicks = result.protocol_rows("clicks")
    assert len(clicks) == 9
    for r in clicks:
        # the clicks protocol starts exactly as point1, and its final IoU is the last click's
        assert r.iou_per_click[0] == pytest.approx(by_key["point1", r.image_id, r.object].iou)
        assert r.iou == pytest.approx(r.iou_per_click[-1])
        assert r.area == int(samples[r.image_id].masks[r.object].sum())
    agg = result.aggregates()
    curves = torch.tensor([r.iou_per_click for r in clicks], dtype=torch.float64)
    assert agg["clicks"]["miou_at_clicks"] == pytest.approx(curves.mean(0).tolist())
    for t, key in ((0.85, "85"), (0.90, "90")):
        assert agg["clicks"][f"noc{key}"] == pytest.approx(
            number_of_clicks(curves, t).double().mean().item()
        )
        assert agg["clicks"][f"nof{key}"] == int((curves.max(1).values < t).sum())
    for protocol in ("point1", "box", "clicks"):
        rows = result.protocol_rows(protocol)
        assert agg[protocol]["miou"] == pytest.approx(np.mean([r.iou for r in rows]))
        assert agg[protocol]["mdice"] == pytest.approx(np.mean([r.dice for r in rows]))
        assert agg[protocol]["per_image"]["1"]["n"] == 2
        assert agg[protocol]["per_class"]["1"]["n"] == 9
    best, worst = result.gallery.examples("box")
    assert len(best) == len(worst) == 4
    assert [e.iou for e in best] == sorted(
        (r.iou for r in result.protocol_rows("box")), reverse=True
    )[:4]
    assert [e.iou for e in worst] == sorted(r.iou for r in result.protocol_rows("box"))[:4]


def test_skips_are_counted_and_max_images_is_honoured(model):
    with_empty = make_blob_sample((64, 64), n=2, seed=5)
    with_empty.masks[1] = False  # an object whose mask is empty cannot be prompted
    empty_image = Sample(
        image=np.zeros((40, 40, 3), np.uint8),
        masks=np.zeros((1, 40, 40), bool),
        meta={"file": "empty.png", "image_id": 7},
    )
    dataset = [with_empty, None, empty_image, make_blob_sample((64, 64), n=1, seed=6)]
    evaluator = Evaluator(protocols=("box",), progress=False)
    result = evaluator.evaluate(model, dataset)
    assert result.skipped_objects == 2 and result.skipped_images == 2
    assert result.images == 2 and len(result.rows) == 2
    assert {r.object for r in result.rows if r.image_id == 5} == {0}
    assert evaluator.evaluate(model, dataset, max_images=1).images == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        Evaluator(protocols=("point1", "clicks5"))
    with pytest.raises(ValueError, match="max_clicks"):
        Evaluator(max_clicks=0)
    with pytest.raises(ValueError, match="noc_thresholds"):
        Evaluator(noc_thresholds=(85,))
    with pytest.raises(ValueError, match="image_batch"):
        Evaluator(image_batch="fast")
    with pytest.raises(ValueError, match="objects_per_decode"):
        Evaluator(objects_per_decode=0)


def test_auto_settings_follow_the_device_and_image_size():
    class Sized:
        def __init__(self, image_size):
            self.image_size = image_size

    assert cpu_decode_chunk(1024) == 2
    assert cpu_decode_chunk(512) == 8
    assert cpu_decode_chunk(256) == 32
    assert cpu_decode_chunk(4096) == 1
    auto = Evaluator()
    assert auto.settings_for(Sized(1024), torch.device("cpu")) == (1, 2)
    assert auto.settings_for(Sized(256), torch.device("cpu")) == (1, 32)
    # on an accelerator too: 500 objects at 1024 px decode 64 at a time, not all at once
    assert auto.settings_for(Sized(1024), torch.device("cuda")) == (4, 64)
    assert auto.settings_for(Sized(512), torch.device("cuda")) == (4, 256)
    assert accelerator_decode_chunk(8192) == 1
    fixed = Evaluator(image_batch=3, objects_per_decode=None)
    assert fixed.settings_for(Sized(1024), torch.device("cpu")) == (3, None)


def test_selecting_one_image_for_many_objects_gives_views_equal_to_copies():
    feats = Features(torch.randn(2, 8, 4, 4), [torch.randn(2, 2, 16, 16), torch.randn(2, 4, 8, 8)])
    one = feats.select(torch.tensor([1, 1, 1]))
    mixed = feats.select(torch.tensor([1, 0, 1]))
    for got, level in zip([one.image_embed, *one.high_res], [feats.image_embed, *feats.high_res]):
        assert got.shape[0] == 3
        assert got.data_ptr() == level[1].data_ptr()  # a view, no copy
        assert torch.equal(got, level[[1, 1, 1]])
    assert torch.equal(mixed.image_embed, feats.image_embed[[1, 0, 1]])
