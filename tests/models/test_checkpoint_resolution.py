"""Checkpoint resolution: explicit path, cache, resumable atomic download with a recorded SHA-256."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from samtune.models import CheckpointError, ModelSpec, resolve_checkpoint
from samtune.models.official import download, verify_recorded_hash

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = PAYLOAD
    honour_range = True
    truncate_to: int | None = None
    requests: list[str | None] = []

    def do_GET(self):  # noqa: N802
        rng = self.headers.get("Range")
        type(self).requests.append(rng)
        start = 0
        if rng and self.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.truncate_to is not None:
            body = body[: self.truncate_to]
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.requests = []
    _Handler.truncate_to = None
    _Handler.honour_range = True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/sam2.1_hiera_tiny.pt"
    httpd.shutdown()


def test_download_records_hash_and_is_verified_later(server, tmp_path):
    path = resolve_checkpoint("sam2.1_hiera_tiny", "auto", cache_dir=tmp_path, url=server)
    assert path == tmp_path / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == PAYLOAD
    record = json.loads((tmp_path / "sam2.1_hiera_tiny.pt.sha256.json").read_text())
    assert record["sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and record["bytes"] == len(
        PAYLOAD
    )
    assert not (tmp_path / "sam2.1_hiera_tiny.pt.part").exists()
    # second resolution: from the cache, no request
    n = len(_Handler.requests)
    assert resolve_checkpoint("sam2.1_hiera_tiny", "auto", cache_dir=tmp_path, url=server) == path
    assert len(_Handler.requests) == n
    # a changed file fails verification with both hashes named
    path.write_bytes(PAYLOAD[:-1] + b"x")
    with pytest.raises(CheckpointError, match="SHA-256 .* was recorded"):
        resolve_checkpoint("sam2.1_hiera_tiny", "auto", cache_dir=tmp_path, url=server)


def test_download_resumes_a_partial_file(server, tmp_path):
    dest = tmp_path / "sam2.1_hiera_tiny.pt"
    (tmp_path / "sam2.1_hiera_tiny.pt.part").write_bytes(PAYLOAD[:1000])
    download(server, dest)
    assert _Handler.requests[-1] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


def test_truncated_download_is_not_put_in_place(server, tmp_path):
    _Handler.truncate_to = 5000
    dest = tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError):
        download(server, dest, timeout=5)
    assert not dest.exists()
    part = tmp_path / "sam2.1_hiera_tiny.pt.part"
    assert part.exists() and part.stat().st_size == 5000
    _Handler.truncate_to = None
    download(server, dest)  # resumed from 5000
    assert _Handler.requests[-1] == "bytes=5000-"
    assert dest.read_bytes() == PAYLOAD


def test_offline_error_says_where_to_put_the_file(tmp_path):
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoint(
            "sam2.1_hiera_small",
            "auto",
            cache_dir=tmp_path,
            url="http://127.0.0.1:9/sam2.1_hiera_small.pt",
        )
    assert str(tmp_path / "sam2.1_hiera_small.pt") in str(err.value)
    with pytest.raises(CheckpointError, match="downloads are off.*sam2.1_hiera_small.pt"):
        resolve_checkpoint("sam2.1_hiera_small", "auto", cache_dir=tmp_path, allow_download=False)


def test_explicit_path_and_null(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint("sam2.1_hiera_tiny", tmp_path / "nope.pt")
    assert resolve_checkpoint("sam2.1_hiera_tiny", None) is None
    f = tmp_path / "x.pt"
    f.write_bytes(b"abc")
    assert resolve_checkpoint("sam2.1_hiera_tiny", str(f)) == f
    verify_recorded_hash(Path(f))  # no record: nothing to verify


def test_on_missing_random_falls_back_loudly(tmp_path, caplog):
    spec = ModelSpec(
        name="sam2.1_hiera_tiny",
        image_size=128,
        checkpoint="auto",
        on_missing="random",
        cache_dir=str(tmp_path),
        allow_download=False,
    )
    with caplog.at_level("WARNING", logger="samtune.models.spec"):
        assert spec.resolve() is None
    assert spec.random_init and "RANDOM WEIGHTS" in caplog.text


def test_cached_checkpoint_is_used(tmp_path, tiny_checkpoint):
    import shutil

    shutil.copy(tiny_checkpoint, tmp_path / "sam2.1_hiera_tiny.pt")
    spec = ModelSpec(
        name="sam2.1_hiera_tiny", image_size=128, cache_dir=str(tmp_path), allow_download=False
    )
    spec.build()
    assert not spec.random_init and spec.resolved_checkpoint == str(
        tmp_path / "sam2.1_hiera_tiny.pt"
    )
