"""Bad requests get a 4xx JSON answer naming the field, never a traceback; API keys."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.helpers import SMALL_SIZE
from tests.serving.helpers import KEY, POINTS, b64_image, client, png_bytes, post


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"image": {"type": "base64", "value": "@@not base64@@"}}, 400, "image.value"),
        ({"image": b64_image(b"hello, not an image")}, 400, "image"),
        ({"image": {"type": "url", "value": "http://example.com/a.png"}}, 400, "image.type"),
        ({"image_id": "never-embedded"}, 400, "image"),
        ({"image_id": "img-001", "sam2_version_id": "hiera_large"}, 400, "sam2_version_id"),
        ({"image_id": "img-001", "format": "png"}, 400, "format"),
        (
            {
                "image_id": "img-001",
                "prompts": [{"box": {"x": 100, "y": 40, "width": 80, "height": 10}}],
            },
            400,
            "prompts[0].box",
        ),
        (
            {
                "image_id": "img-001",
                "prompts": [{"box": {"x": 50, "y": 40, "width": 0, "height": 10}}],
            },
            400,
            "prompts[0].box",
        ),
        ({"image_id": "img-001", "prompts": [{"points": [{"x": 500, "y": 4}]}]}, 400, "prompts[0]"),
        (
            {"image_id": "img-001", "prompts": [{"points": [{"x": 5, "y": 4}]}, {}]},
            400,
            "prompts[1]",
        ),
        ({"image_id": "img-001", "prompts": [{"points": [{"x": 5, "y": 4}]}] * 5}, 400, "prompts"),
        (
            {"image_id": "img-001", "prompts": [{"points": [{"x": 5, "y": 4}] * 9}]},
            400,
            "prompts[0].points",
        ),
        (
            {"image_id": "img-001", "prompts": [{"points": [{"x": "left", "y": 4}]}]},
            422,
            "prompts.prompts[0].points[0].x",
        ),
        ({"image_id": "img-001", "multimask_output": "maybe"}, 422, "multimask_output"),
        ({"image_id": "img-001", "mask_input": [[[1, 2]]]}, 400, "mask_input"),
        (
            {"image_id": "img-001", "mask_input": "AAAA", "mask_input_format": "binary"},
            400,
            "mask_input",
        ),
        (
            {"image_id": "img-001", "mask_input": [], "mask_input_format": "png"},
            400,
            "mask_input_format",
        ),
        ({"image": {"type": "numpy", "value": "AAAA"}}, 400, "image.value"),
        ({"image_id": "x" * 300}, 422, "image_id"),
        ({"image": b64_image(png_bytes(np.zeros((150, 150, 3), np.uint8)))}, 413, "image"),
        ({"image": {"type": "base64", "value": "A" * (2**20 + 8)}}, 413, "body"),
    ],
)
def test_bad_requests_get_4xx_json_naming_the_field(service, png, body, status, field):
    url, _ = service
    post(url, "/sam2/embed_image", {"image": b64_image(png.read_bytes()), "image_id": "img-001"})
    r = post(url, "/sam2/segment_image", body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    answer = r.json()
    assert answer["field"] == field and answer["message"], answer
    assert "Traceback" not in r.text


def test_invalid_json_is_422_naming_the_body(service):
    url, _ = service
    r = httpx.post(
        f"{url}/sam2/segment_image?api_key={KEY}",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 422 and r.json()["field"] == "body"


def test_api_key_from_query_body_or_bearer(service, png):
    url, _ = service
    body = {"image": b64_image(png.read_bytes()), "image_id": "img-001"}
    route = f"{url}/sam2/embed_image"
    assert httpx.post(route, json=body, timeout=60).status_code == 401
    r = httpx.post(route + "?api_key=wrong", json=body, timeout=60)
    assert r.status_code == 403 and r.json()["field"] == "api_key"
    assert httpx.post(route, json={**body, "api_key": KEY}, timeout=60).status_code == 200
    headers = {"Authorization": f"Bearer {KEY}"}
    assert httpx.post(route, json=body, headers=headers, timeout=60).status_code == 200
    assert httpx.get(f"{url}/info", timeout=60).status_code == 401
    info = httpx.get(f"{url}/info", headers=headers, timeout=60).json()
    assert info["auth"] is True and info["models"][0]["image_size"] == SMALL_SIZE
    assert httpx.get(f"{url}/health", timeout=60).json()["status"] == "ok"


def test_client_sees_the_errors(service, png):
    pytest.importorskip("inference_sdk")
    from inference_sdk.http.errors import HTTPCallErrorError

    url, _ = service
    with pytest.raises(HTTPCallErrorError) as err:
        client(url, "wrong").sam2_segment_image(str(png), prompts=[{"points": POINTS[0]}])
    assert err.value.status_code == 403
    with pytest.raises(HTTPCallErrorError) as err:
        client(url).sam2_segment_image(
            str(png), prompts=[{"points": POINTS[0]}], sam2_version_id="hiera_large"
        )
    assert err.value.status_code == 400 and "hiera_large" in err.value.api_message
