"""The serving tests' server: the real sam2.1_hiera_tiny at 128 px behind one API key, on a free
127.0.0.1 port, shared by the package's tests."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.serving import EmbeddingCache, KeyCheck, ServedModel, Server, create_app
from samtune.serving.run import background_server
from tests.helpers import SMALL_SIZE, make_blob_sample
from tests.serving.helpers import KEY, LIMITS, official_predictor, png_bytes


@pytest.fixture(scope="package")
def image() -> np.ndarray:
    return make_blob_sample().image  # 96 x 120 RGB


@pytest.fixture(scope="package")
def png(image, tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "blobs.png"
    path.write_bytes(png_bytes(image))
    return path


@pytest.fixture(scope="package")
def official(tiny_checkpoint):
    return official_predictor(tiny_checkpoint, SMALL_SIZE)


@pytest.fixture(scope="package")
def service(tiny_checkpoint):
    """A server on a free 127.0.0.1 port with one key and small limits; yields (url, model)."""
    served = ServedModel.load(None, tiny_checkpoint, image_size=SMALL_SIZE)
    server = Server(
        {served.version_id: served},
        cache=EmbeddingCache(64 * 2**20),
        keys=KeyCheck([KEY]),
        limits=LIMITS,
    )
    with background_server(create_app(server)) as url:
        yield url, served
