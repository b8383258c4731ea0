"""Small images for the prompts-file and folder-prediction tests."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.helpers import make_blob_sample


def write_images(folder) -> dict[str, np.ndarray]:
    """Two small images: RGB PNG (96 x 120) and 16-bit grayscale PNG (64 x 80)."""
    folder.mkdir(exist_ok=True)
    rgb = make_blob_sample(seed=2).image
    Image.fromarray(rgb).save(folder / "a.png")
    gray = make_blob_sample(size=(64, 80), seed=4).image[..., 0].astype(np.uint16) * 200
    Image.fromarray(gray).save(folder / "b.png")
    return {"a.png": rgb, "b.png": gray}
