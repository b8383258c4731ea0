"""samtune-serve answers Roboflow's SAM 2 API as sam2's own predictor would, through the real
``inference-sdk`` client and through raw HTTP."""

from __future__ import annotations

import hashlib
import io
import threading

import httpx
import numpy as np
import pytest

from tests.helpers import SMALL_SIZE
from tests.serving.helpers import (
    BOXES,
    KEY,
    POINTS,
    b64_image,
    best_masks,
    client,
    png_bytes,
    post,
    rle_to_mask,
)


def test_client_masks_equal_the_official_predictor(service, official, png, image):
    pytest.importorskip("inference_sdk")
    url, served = service
    assert served.version_id == "hiera_tiny" and served.image_size == SMALL_SIZE
    coords = np.array([[[p["x"], p["y"]] for p in pts] for pts in POINTS], dtype=float)
    expected, scores = best_masks(
        official, image, point_coords=coords, point_labels=np.ones((2, 1)), multimask_output=True
    )
    answer = client(url).sam2_segment_image(
        str(png),
        prompts=[{"points": pts} for pts in POINTS],
        sam2_version_id="hiera_tiny",
        multimask_output=True,
        mask_input_format="rle",
    )
    preds = answer["predictions"]
    assert [p["format"] for p in preds] == ["rle", "rle"]
    got = np.stack([rle_to_mask(p["masks"]) for p in preds])
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose([p["confidence"] for p in preds], scores, rtol=1e-5)
    # the comparison has teeth: the two prompts give two different, non-trivial masks
    assert not np.array_equal(expected[0], expected[1])
    assert all(0 < m.sum() < m.size for m in expected)

    # boxes (centre + size) and the default polygon format
    xyxy = np.array(
        [
            [
                b["x"] - b["width"] / 2,
                b["y"] - b["height"] / 2,
                b["x"] + b["width"] / 2,
                b["y"] + b["height"] / 2,
            ]
            for b in BOXES
        ]
    )
    expected, _ = best_masks(official, image, box=xyxy, multimask_output=False)
    answer = client(url).sam2_segment_image(
        str(png), prompts=[{"box": b} for b in BOXES], multimask_output=False
    )
    for pred, mask in zip(answer["predictions"], expected, strict=True):
        assert pred["format"] == "polygon"
        filled = fill_polygons(pred["masks"], mask.shape)
        assert filled[mask].all()  # the external contours enclose every mask pixel
        for polygon in pred["masks"]:
            xs, ys = np.array(polygon).T
            assert mask[ys, xs].all()  # and run along mask pixels


def fill_polygons(polygons: list, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    canvas = np.zeros(shape, np.uint8)
    for polygon in polygons:
        if polygon:
            cv2.fillPoly(canvas, [np.array(polygon, np.int32)], 1)
            cv2.polylines(canvas, [np.array(polygon, np.int32)], True, 1)
    return canvas.astype(bool)


def test_embed_once_then_segment_by_image_id_raw_http(service, official, png, image):
    url, served = service
    before = served.encodes
    r = post(
        url, "/sam2/embed_image", {"image": b64_image(png.read_bytes()), "image_id": "img-001"}
    )
    assert r.status_code == 200 and r.json()["image_id"] == "img-001" and r.json()["time"] >= 0
    # without image_id the id is Roboflow's: md5 of the RGB bytes, 12 hex digits
    other = image.copy()
    other[5, 5] = [7, 8, 9]
    r = post(url, "/sam2/embed_image", {"image": b64_image(png_bytes(other))})
    assert r.json()["image_id"] == hashlib.md5(other.tobytes()).hexdigest()[:12]
    assert served.encodes == before + 2
    # segment by image_id alone: no image, no encoder run; binary answer (.npz)
    body = {
        "image_id": "img-001",
        "prompts": {
            "prompts": [
                {
                    "points": [
                        {"x": 60, "y": 40, "positive": True},
                        {"x": 20, "y": 80, "positive": False},
                    ]
                }
            ]
        },
        "format": "binary",
        "multimask_output": True,
        "sam2_version_id": "hiera_tiny",
    }
    r = post(url, "/sam2/segment_image", body)
    assert r.status_code == 200, r.text
    npz = np.load(io.BytesIO(r.content))
    expected, scores = best_masks(
        official,
        image,
        point_coords=np.array([[60.0, 40.0], [20.0, 80.0]]),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    )
    np.testing.assert_array_equal(npz["masks"], expected)
    assert npz["low_res_masks"].shape == (1, SMALL_SIZE // 4, SMALL_SIZE // 4)
    np.testing.assert_allclose(npz["confidence"], scores, rtol=1e-5)
    # the same call on the sam3 alias, a flat list of prompts, JSON RLE
    body.update(format="rle", prompts=body["prompts"]["prompts"])
    r = post(url, "/sam3/visual_segment", body)
    np.testing.assert_array_equal(rle_to_mask(r.json()["predictions"][0]["masks"]), expected[0])
    assert served.encodes == before + 2


def test_client_numpy_image_travels_as_jpeg(service, official, image):
    """The client sends a numpy array (OpenCV's BGR order) as JPEG; the server decodes it as
    Roboflow's does, so the masks equal the predictor's on the decoded JPEG."""
    pytest.importorskip("inference_sdk")
    import cv2
    from inference_sdk.http.utils.encoding import numpy_array_to_base64_jpeg

    url, _ = service
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    jpeg = __import__("base64").b64decode(numpy_array_to_base64_jpeg(bgr))
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    expected, _ = best_masks(
        official,
        np.ascontiguousarray(decoded),
        point_coords=np.array([[60.0, 40.0]]),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    answer = client(url).sam2_segment_image(
        bgr, prompts=[{"points": POINTS[0]}], mask_input_format="rle"
    )
    np.testing.assert_array_equal(rle_to_mask(answer["predictions"][0]["masks"]), expected[0])


def test_concurrent_requests_for_a_new_image_encode_it_once(service, image):
    url, served = service
    fresh = image.copy()
    fresh[0, 0] = [1, 2, 3]  # an image the cache has not seen
    body = {
        "image": b64_image(png_bytes(fresh)),
        "image_id": "fresh",
        "format": "rle",
        "prompts": [{"points": POINTS[0]}],
    }
    before = served.encodes
    answers: list = [None] * 6

    def call(i: int) -> None:
        answers[i] = post(url, "/sam2/segment_image", body)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(a is not None and a.status_code == 200 for a in answers)
    assert len({a.json()["predictions"][0]["masks"]["counts"] for a in answers}) == 1
    assert served.encodes == before + 1


def concurrent_mix(url: str, official, image: np.ndarray, *, clients: int, rounds: int) -> None:
    """``clients`` threads send segment calls over two images and two prompt sets in a bounded
    loop; every answer must be the official mask of its own image and prompts (no cross-talk)."""
    images = [image, np.ascontiguousarray(image[::-1])]
    prompt_sets = [[{"points": POINTS[0]}], [{"box": BOXES[0]}]]
    expected = {}
    for i, img in enumerate(images):
        official.set_image(img)
        for j, prompts in enumerate(prompt_sets):
            if "points" in prompts[0]:
                p = prompts[0]["points"][0]
                kwargs = {
                    "point_coords": np.array([[p["x"], p["y"]]]),
                    "point_labels": np.array([1]),
                }
            else:
                b = prompts[0]["box"]
                kwargs = {
                    "box": np.array(
                        [
                            b["x"] - b["width"] / 2,
                            b["y"] - b["height"] / 2,
                            b["x"] + b["width"] / 2,
                            b["y"] + b["height"] / 2,
                        ]
                    )
                }
            expected[i, j] = best_masks(official, img, multimask_output=True, **kwargs)[0][0]
    bodies = {
        (i, j): {
            "image": b64_image(png_bytes(img)),
            "image_id": f"mix-{i}",
            "format": "rle",
            "prompts": prompts,
        }
        for i, img in enumerate(images)
        for j, prompts in enumerate(prompt_sets)
    }
    failures: list = []

    def worker(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            for r in range(rounds):
                key = ((k + r) % 2, (k // 2 + r) % 2)
                answer = http.post(f"{url}/sam2/segment_image?api_key={KEY}", json=bodies[key])
                if answer.status_code != 200:
                    failures.append((key, answer.text))
                    continue
                got = rle_to_mask(answer.json()["predictions"][0]["masks"])
                if not np.array_equal(got, expected[key]):
                    failures.append((key, "mask differs"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_concurrent_requests_get_their_own_masks(service, official, image):
    concurrent_mix(service[0], official, image, clients=4, rounds=3)


@pytest.mark.slow
def test_concurrency_soak(service, official, image):
    concurrent_mix(service[0], official, image, clients=16, rounds=15)
