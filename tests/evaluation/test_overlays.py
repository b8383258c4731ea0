"""Overlays people can read: each object in a crop around it, short titles, one renderer."""

from __future__ import annotations

import numpy as np

from samtune.evaluation.report.gallery import make_example
from samtune.evaluation.report.overlay import (
    GT_COLOR,
    PRED_COLOR,
    crop_around,
    object_overlays,
    render,
    short_name,
)


def _tiny_object() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((512, 640), bool)
    gt[300:303, 400:404] = True  # 12 px in a 512 x 640 image
    return gt, np.ones_like(gt)  # a prediction that covers the whole image


def test_a_small_object_fills_its_crop_even_when_the_prediction_covers_everything():
    gt, pred = _tiny_object()
    r0, r1, c0, c1 = crop_around(gt, points=np.array([[401.0, 301.0]]))
    assert (r1 - r0, c1 - c0) == (16, 16)  # the minimum side, not the whole image
    assert r0 <= 300 and r1 >= 303 and c0 <= 400 and c1 >= 404
    example = make_example(
        protocol="point1",
        iou=0.0,
        image=np.zeros((512, 640, 3), np.uint8),
        gt=gt,
        pred=pred,
        points=np.array([[401.0, 301.0]]),
        labels=np.array([1]),
        file="x" * 64 + ".png",
    )
    assert example.image.shape[:2] == (16, 16) and int(example.gt.sum()) == 12
    assert np.allclose(example.points, [[401.0 - c0, 301.0 - r0]])


def test_crop_keeps_context_and_stays_inside_the_image():
    gt = np.zeros((100, 100), bool)
    gt[0:40, 70:100] = True  # 40 x 30 at the top-right corner
    r0, r1, c0, c1 = crop_around(gt, context=0.5)
    assert r0 == 0 and c1 == 100 and 0 <= c0 < 70 and r1 > 40
    assert r1 - r0 == 80 and c1 - c0 == 70  # 40 + 2 x 20 rows; 30 + 2 x 20 columns
    assert crop_around(np.zeros((30, 20), bool)) == (0, 30, 0, 20)


def test_render_enlarges_and_draws_gt_outline_prediction_and_clicks():
    image = np.full((8, 10, 3), 100, np.uint8)
    gt = np.zeros((8, 10), bool)
    gt[2:6, 3:7] = True
    pred = np.zeros((8, 10), bool)
    pred[0:2, 0:2] = True
    out = render(image, gt, pred, points=np.array([[8.0, 6.0]]), labels=np.array([0]), display=100)
    assert out.shape == (80, 100, 3) and out.dtype == np.uint8  # enlarged x10
    green = np.all(out == GT_COLOR.astype(np.uint8), axis=-1)
    assert green[20:60, 30:70].any() and not green[:20].any()  # outline on the object only
    assert not green[25:55, 35:65].any()  # an outline, not a fill
    blended = (0.55 * 100 + 0.45 * PRED_COLOR).astype(np.uint8)
    assert np.abs(out[5, 5].astype(int) - blended).max() <= 1
    red = (out[..., 0] > 200) & (out[..., 1] < 80)
    ys, xs = np.nonzero(red)
    assert abs(xs.mean() - 85) < 2 and abs(ys.mean() - 65) < 2  # an x at pixel (8, 6)


def test_training_overlays_use_the_same_renderer_one_crop_per_object():
    image = np.zeros((128, 128, 3), np.uint8)
    gt = np.zeros((3, 128, 128), bool)
    gt[0, 10:14, 10:14] = True
    gt[1, 60:100, 60:100] = True
    gt[2, 120:124, 0:4] = True
    pictures = object_overlays(
        image, gt, gt, np.array([[[11.0, 11.0]], [[80.0, 80.0]], [[1.0, 121.0]]]), limit=2
    )
    assert len(pictures) == 2
    assert all(p.dtype == np.uint8 and p.shape[2] == 3 for p in pictures)
    assert max(pictures[0].shape[:2]) >= 150  # a 4-px object drawn large


def test_short_names_keep_both_ends():
    name = "0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9.png"
    short = short_name(f"/data/images/{name}")
    assert len(short) == 18 and short.startswith("0a7d30b25") and short.endswith("e4e9.png")
    assert short_name("cell1.png") == "cell1.png"


def test_report_title_and_legend(tmp_path):
    from samtune.evaluation import EvalResult
    from samtune.evaluation.report.files import write_results
    from samtune.evaluation.results import ObjectResult

    result = EvalResult(protocols=("point1",), max_clicks=3, noc_thresholds=(0.85,))
    result.rows.append(
        ObjectResult(
            image_id=1, file="a.png", object=0, class_id=1, class_name="c",
            protocol="point1", area=10, iou=0.5, dice=0.6, pred_iou=0.5,
        )
    )  # fmt: skip
    result.images = 1
    summary = {"model": "sam2.1_hiera_tiny", "adapter": None, "checkpoint": None}
    files = write_results(result, tmp_path, summary=summary)
    text = files["report_md"].read_text()
    assert text.startswith("# samtune evaluation: sam2.1_hiera_tiny / zero-shot\n")
    assert "point1: one click at the deepest point" in text
    assert "box:" not in text and "correction clicks" not in text
    tuned = dict(summary, adapter="lora", checkpoint="run/best.ckpt")
    text = write_results(result, tmp_path / "t", summary=tuned)["report_md"].read_text()
    assert text.startswith("# samtune evaluation: sam2.1_hiera_tiny / lora\n")
