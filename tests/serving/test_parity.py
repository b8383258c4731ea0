"""What Roboflow's server accepts, samtune-serve accepts: prompts with different numbers of
clicks (padded as Roboflow pads them), with and without a box in one request, a previous answer's
logits as ``mask_input`` (sent or cached), URL and numpy images; and what it must refuse."""

from __future__ import annotations

import base64
import http.server
import io
import pickle
import resource
import struct
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from samtune.serving import EmbeddingCache, KeyCheck, Server, create_app
from samtune.serving.fetch import UrlFetcher
from samtune.serving.run import background_server
from tests.helpers import SMALL_SIZE, make_blob_sample
from tests.serving.helpers import KEY, LIMITS, b64_image, best_masks, client, png_bytes, post

ONE = [{"x": 60, "y": 40, "positive": True}]
TWO = [{"x": 30, "y": 70, "positive": True}, {"x": 70, "y": 20, "positive": False}]


def _npz(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return dict(np.load(io.BytesIO(response.content)))


def test_prompts_with_different_click_counts_equal_roboflows_padded_batch(
    service, official, png, image
):
    pytest.importorskip("inference_sdk")
    url, _ = service
    answer = client(url).sam2_segment_image(
        str(png), prompts=[{"points": ONE}, {"points": TWO}], mask_input_format="rle"
    )
    assert len(answer["predictions"]) == 2  # one prediction per prompt
    # Roboflow's padding: (0, 0) with label -1 ("not a point") up to the most clicks
    coords = np.array([[[60, 40], [0, 0]], [[30, 70], [70, 20]]], dtype=float)
    labels = np.array([[1, -1], [1, 0]])
    expected, scores = best_masks(
        official, image, point_coords=coords, point_labels=labels, multimask_output=True
    )
    r = post(
        url,
        "/sam2/segment_image",
        {
            "image": b64_image(png.read_bytes()),
            "prompts": [{"points": ONE}, {"points": TWO}],
            "format": "binary",
        },
    )
    got = _npz(r)
    np.testing.assert_array_equal(got["masks"], expected)
    np.testing.assert_allclose(got["confidence"], scores, rtol=1e-5)
    # the padding token changes the 1-click prompt's answer a little against a request of its own
    alone, alone_score = best_masks(
        official,
        image,
        point_coords=coords[:1, :1],
        point_labels=labels[:1, :1],
        multimask_output=True,
    )
    print(
        "padded vs alone: pixels differing",
        int((alone[0] != expected[0]).sum()),
        "scores",
        float(alone_score[0]),
        float(scores[0]),
    )


def test_prompts_with_and_without_a_box_are_decoded_in_groups(service, official, png, image):
    url, _ = service
    box = {"x": 60, "y": 45, "width": 50, "height": 40}
    prompts = [{"points": ONE}, {"box": box}, {"points": TWO}, {"box": box, "points": ONE}]
    got = _npz(
        post(
            url,
            "/sam2/segment_image",
            {"image": b64_image(png.read_bytes()), "prompts": prompts, "format": "binary"},
        )
    )
    assert got["masks"].shape[0] == 4
    xyxy = np.array([[35.0, 25.0, 85.0, 65.0]] * 2)
    # the group with points only, padded to two clicks
    pts, _ = best_masks(
        official,
        image,
        point_coords=np.array([[[60, 40], [0, 0]], [[30, 70], [70, 20]]], float),
        point_labels=np.array([[1, -1], [1, 0]]),
        multimask_output=True,
    )
    # the group with boxes, its points padded to the request's most clicks too
    boxed, _ = best_masks(
        official,
        image,
        box=xyxy,
        point_coords=np.array([[[0, 0], [0, 0]], [[60, 40], [0, 0]]], float),
        point_labels=np.array([[-1, -1], [1, -1]]),
        multimask_output=True,
    )
    np.testing.assert_array_equal(got["masks"][[0, 2]], pts)
    np.testing.assert_array_equal(got["masks"][[1, 3]], boxed)


def test_mask_input_round_trip_sent_or_cached(service, official, png, image):
    url, served = service
    post(url, "/sam2/embed_image", {"image": b64_image(png.read_bytes()), "image_id": "mi"})
    first = _npz(
        post(
            url,
            "/sam2/segment_image",
            {
                "image_id": "mi",
                "prompts": [{"points": ONE}],
                "format": "binary",
                "save_logits_to_cache": True,
            },
        )
    )
    low = first["low_res_masks"]
    assert low.shape == (1, served.low_res_size, served.low_res_size) == (1, 32, 32)
    # the official predictor fed its own previous logits
    official.set_image(image)
    masks, scores, logits = official.predict(
        point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1]), multimask_output=True
    )
    best = int(np.argmax(scores))
    np.testing.assert_allclose(low[0], logits[best], atol=1e-5)
    clicks = ONE + [{"x": 70, "y": 20, "positive": False}]
    expected, exp_scores = best_masks(
        official,
        image,
        point_coords=np.array([[60.0, 40.0], [70.0, 20.0]]),
        point_labels=np.array([1, 0]),
        mask_input=logits[best : best + 1],
        multimask_output=False,
    )
    second = {
        "image_id": "mi",
        "prompts": [{"points": clicks}],
        "format": "binary",
        "multimask_output": False,
    }
    sent_npz = base64.b64encode(_npz_bytes(first)).decode()
    answers = {
        "json": _npz(post(url, "/sam2/segment_image", {**second, "mask_input": low.tolist()})),
        "binary": _npz(
            post(
                url,
                "/sam2/segment_image",
                {**second, "mask_input": sent_npz, "mask_input_format": "binary"},
            )
        ),
        "cache": _npz(post(url, "/sam2/segment_image", {**second, "load_logits_from_cache": True})),
        "sam1 name": _npz(
            post(url, "/sam2/segment_image", {**second, "use_mask_input_cache": True})
        ),
    }
    for name, got in answers.items():
        np.testing.assert_array_equal(got["masks"], expected, err_msg=name)
        np.testing.assert_allclose(got["confidence"], exp_scores, rtol=1e-5, err_msg=name)
    # the mask input matters: without it the answer differs
    plain = _npz(post(url, "/sam2/segment_image", second))
    assert not np.allclose(plain["low_res_masks"], answers["cache"]["low_res_masks"])
    # a cached answer is used only for a prompt set that contains it
    other = {**second, "prompts": [{"points": [{"x": 20, "y": 80, "positive": True}] * 2}]}
    unrelated = _npz(post(url, "/sam2/segment_image", {**other, "load_logits_from_cache": True}))
    np.testing.assert_array_equal(
        unrelated["low_res_masks"], _npz(post(url, "/sam2/segment_image", other))["low_res_masks"]
    )


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_an_image_id_sent_again_with_another_image_answers_for_that_image(service, official, png):
    url, served = service
    post(url, "/sam2/embed_image", {"image": b64_image(png.read_bytes()), "image_id": "reused"})
    other = make_blob_sample(size=(64, 80), n=2, seed=5).image
    body = {"image_id": "reused", "prompts": [{"points": [{"x": 30, "y": 20}]}], "format": "binary"}
    got = _npz(post(url, "/sam2/segment_image", {**body, "image": b64_image(png_bytes(other))}))
    expected, _ = best_masks(
        official, other, point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1])
    )
    assert got["masks"].shape == (1, 64, 80)
    np.testing.assert_array_equal(got["masks"], expected)
    # the id alone now names the newer image
    assert _npz(post(url, "/sam2/segment_image", body))["masks"].shape == (1, 64, 80)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` gray pixels, with a tiny IDAT: what a
    decompression bomb shows before any pixel is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 64, 9)  # the first rows; a bomb would go on
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _bmp_header(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\0" * 1024
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 54) + info + pixels


@pytest.mark.parametrize(
    ("data", "pixels"),
    [
        (_png_header(20_000, 20_000), 400_000_000),
        (_png_header(40_000, 40_000), 1_600_000_000),
        (_bmp_header(30_000, 30_000), 900_000_000),
    ],
    ids=["png-400M", "png-1.6G", "bmp-900M"],
)
def test_a_huge_declared_size_is_refused_from_the_header(service, data, pixels):
    url, _ = service
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the server runs in-process
    r = post(url, "/sam2/embed_image", {"image": b64_image(data)})
    assert r.status_code == 413, r.text
    assert r.json()["field"] == "image" and str(pixels) in r.json()["message"]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"


def test_malformed_bodies_get_samtunes_error_json(service):
    url, _ = service
    for content in (b'{"image_id": "\xff\xfe"}', b"[" * 100_000 + b"]" * 100_000):
        r = httpx.post(
            f"{url}/sam2/segment_image?api_key={KEY}",
            content=content,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert 400 <= r.status_code < 500, r.text
        answer = r.json()
        assert answer["field"] == "body" and answer["message"] and "detail" not in answer
    r = httpx.get(f"{url}/no/such/route", timeout=60)
    assert r.status_code == 404 and "message" in r.json()


def test_numpy_images_are_read_without_running_pickled_code(service, official, image, tmp_path):
    url, _ = service
    bgr = np.ascontiguousarray(image[:, :, ::-1])  # Roboflow's numpy images are OpenCV's BGR
    body = {"prompts": [{"points": ONE}], "format": "binary"}
    expected, _ = best_masks(
        official, image, point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1])
    )
    npy = io.BytesIO()
    np.save(npy, bgr)
    for payload in (pickle.dumps(bgr), pickle.dumps(bgr, protocol=5), npy.getvalue()):
        value = base64.b64encode(payload).decode()
        got = _npz(
            post(url, "/sam2/segment_image", {**body, "image": {"type": "numpy", "value": value}})
        )
        np.testing.assert_array_equal(got["masks"], expected)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    value = base64.b64encode(pickle.dumps(Evil())).decode()
    r = post(url, "/sam2/embed_image", {"image": {"type": "numpy", "value": value}})
    assert r.status_code == 400 and r.json()["field"] == "image.value"
    assert not marker.exists()


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/images/moved"):
            self.send_response(302)
            self.send_header("Location", "/images/blobs.png")
            self.end_headers()
            return
        super().do_GET()


def test_url_images_only_from_allowed_prefixes(tiny_checkpoint, official, image, tmp_path):
    from samtune.serving import ServedModel

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "blobs.png").write_bytes(png_bytes(image))
    (tmp_path / "secret.png").write_bytes(png_bytes(image))
    handler = lambda *a, **k: _Files(*a, directory=str(tmp_path), **k)  # noqa: E731
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=files.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    served = ServedModel.load(None, tiny_checkpoint, image_size=SMALL_SIZE)
    server = Server(
        {served.version_id: served},
        cache=EmbeddingCache(16 * 2**20),
        keys=KeyCheck([KEY]),
        limits=LIMITS,
        fetch=UrlFetcher([f"{base}/images/"], max_bytes=LIMITS.max_body_bytes, timeout_s=10),
    )
    expected, _ = best_masks(
        official, image, point_coords=np.array([[60.0, 40.0]]), point_labels=np.array([1])
    )
    try:
        with background_server(create_app(server)) as url:

            def ask(value: str) -> httpx.Response:
                body = {
                    "image": {"type": "url", "value": value},
                    "prompts": [{"points": ONE}],
                    "format": "binary",
                }
                return post(url, "/sam2/segment_image", body)

            np.testing.assert_array_equal(_npz(ask(f"{base}/images/blobs.png"))["masks"], expected)
            for refused in (
                f"{base}/secret.png",
                f"{base}/images/../secret.png",
                f"{base}/images/%2e%2e/secret.png",
                f"http://x@127.0.0.1:{files.server_address[1]}/images/blobs.png",
                f"{base}/images/moved",
                f"{base}/images/missing.png",
                "file:///etc/passwd",
            ):
                r = ask(refused)
                assert r.status_code == 400 and r.json()["field"] == "image.value", (
                    refused,
                    r.text,
                )
    finally:
        files.shutdown()
