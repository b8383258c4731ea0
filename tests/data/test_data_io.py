"""Reading images and label maps: channel and bit-depth conversion, and errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from samtune.data.io import read_image, read_label_map, read_size
from samtune.data.sample import DataError


def _outlier_ramp(dtype) -> np.ndarray:
    """200x200: a ramp 1000..2000, plus 10 pixels at 0 and 10 at 60000 (below 0.5 % each)."""
    image = np.linspace(1000, 2000, 200 * 200).reshape(200, 200).astype(dtype)
    image.flat[:10] = 0
    image.flat[-10:] = 60000
    return image


def test_grayscale_png_is_replicated(tmp_path):
    gray = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_png_drops_alpha(tmp_path):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(9, 7, 4), dtype=np.uint8)
    rgba[:, :, 3] = 0  # fully transparent: the colour must survive unchanged
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[:, :, :3])


def test_jpeg_and_bmp_read(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:, :8] = (200, 30, 30)
    Image.fromarray(rgb).save(tmp_path / "x.bmp")
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "x.bmp"), rgb)
    jpeg = read_image(tmp_path / "x.jpg").astype(int)
    assert np.abs(jpeg[2:14, 1:6] - rgb[2:14, 1:6]).max() < 20  # lossy, but the colour is kept


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_gray_rescaled_by_robust_percentiles(tmp_path, suffix):
    image = _outlier_ramp(np.uint16)
    path = tmp_path / f"g16{suffix}"
    if suffix == ".png":
        Image.fromarray(image).save(path)
        assert Image.open(path).mode.startswith("I;16")
    else:
        tifffile.imwrite(path, image)
    out = read_image(path)
    assert out.shape == (200, 200, 3) and out.dtype == np.uint8
    gray = out[:, :, 0].astype(int)
    assert (out[:, :, 1] == out[:, :, 0]).all() and (out[:, :, 2] == out[:, :, 0]).all()
    # outliers clip to the ends; the ramp (which holds the 0.5/99.5 percentiles near its ends)
    # spans nearly the full range, its middle value 1500 lands in the middle
    assert gray.flat[:10].max() == 0 and gray.flat[-10:].min() == 255
    middle = np.argmin(np.abs(image.astype(float) - 1500))
    assert abs(gray.flat[middle] - 127.5) <= 3
    ramp = gray.flat[10:-10]
    assert (np.diff(ramp) >= 0).all() and ramp.min() <= 2 and ramp.max() >= 253


def test_constant_and_sparse_16bit(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.full((20, 30), 777, dtype=np.uint16))
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif"), np.zeros((20, 30, 3), np.uint8))
    sparse = np.zeros((100, 100), dtype=np.uint16)
    sparse[5, 5], sparse[50, 50] = 4000, 2000  # percentiles both 0: falls back to min/max
    tifffile.imwrite(tmp_path / "s.tif", sparse)
    out = read_image(tmp_path / "s.tif")[:, :, 0]
    assert out[5, 5] == 255 and out[50, 50] == 128 and out.sum() == 255 + 128


def test_float_tiff_and_planar_rgb_tiff(tmp_path):
    values = np.linspace(-1.0, 3.0, 64 * 64, dtype=np.float32).reshape(64, 64)
    tifffile.imwrite(tmp_path / "f.tif", values)
    out = read_image(tmp_path / "f.tif")[:, :, 0].astype(int)
    assert out[0, 0] == 0 and out[-1, -1] == 255 and (np.diff(out.ravel()) >= 0).all()
    planar = np.zeros((3, 8, 10), dtype=np.uint8)
    planar[0] = 200  # red
    tifffile.imwrite(tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate")
    rgb = read_image(tmp_path / "p.tif")
    assert rgb.shape == (8, 10, 3) and (rgb[:, :, 0] == 200).all() and (rgb[:, :, 1:] == 0).all()
    assert read_size(tmp_path / "p.tif") == (8, 10)


def test_16bit_colour_png_keeps_channel_order(tmp_path):
    import cv2

    rgb = np.zeros((10, 12, 3), dtype=np.uint16)
    rgb[:, :, 0] = 50000  # red high
    rgb[:, :, 2] = np.arange(12) * 1000  # blue ramp
    cv2.imwrite(str(tmp_path / "c16.png"), rgb[:, :, ::-1])  # OpenCV writes BGR
    out = read_image(tmp_path / "c16.png").astype(int)
    assert (out[:, :, 0] == 255).all() and (out[:, :, 1] == 0).all()
    assert (np.diff(out[0, :, 2]) > 0).all()


def test_corrupt_missing_and_truncated_images_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG not really an image")
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        read_image(bad)
    with pytest.raises(DataError, match=r"nothere\.png: cannot read image: file not found"):
        read_image(tmp_path / "nothere.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    assert read_size(tmp_path / "t.png") == (64, 64)  # the header is intact...
    with pytest.raises(DataError, match=r"t\.png: cannot read image"):
        read_image(tmp_path / "t.png")  # ...the pixels are not
    volume = np.zeros((5, 8, 8), dtype=np.uint16)  # five pages: a volume
    tifffile.imwrite(tmp_path / "v.tif", volume)
    with pytest.raises(DataError, match=r"v\.tif: cannot read image: .*2-D"):
        read_image(tmp_path / "v.tif")


def test_label_maps(tmp_path):
    labels = np.zeros((20, 30), dtype=np.uint16)
    labels[2:5, 3:9] = 1
    labels[10:15, 10:20] = 300
    Image.fromarray(labels).save(tmp_path / "l16.png")
    tifffile.imwrite(tmp_path / "l16.tif", labels)
    tifffile.imwrite(tmp_path / "l8.tif", (labels > 0).astype(np.uint8) * 7)
    for name, expected in (("l16.png", labels), ("l16.tif", labels), ("l8.tif", (labels > 0) * 7)):
        out = read_label_map(tmp_path / name)
        assert out.shape == (20, 30) and np.issubdtype(out.dtype, np.integer)
        np.testing.assert_array_equal(out, expected)
    palette = Image.fromarray((labels > 0).astype(np.uint8) * 3, mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "p.png"), (labels > 0) * 3)
    colour = np.zeros((20, 30, 3), dtype=np.uint8)
    colour[2:5, 3:9] = (255, 0, 0)
    colour[10:15, 10:20] = (0, 0, 255)
    Image.fromarray(colour).save(tmp_path / "rgb.png")
    out = read_label_map(tmp_path / "rgb.png")
    assert out[0, 0] == 0 and set(np.unique(out)) == {0, 1, 2} and out[3, 4] != out[12, 12]
    tifffile.imwrite(tmp_path / "neg.tif", np.full((4, 4), -2, dtype=np.int16))
    with pytest.raises(DataError, match=r"neg\.tif: cannot read label map: .*negative"):
        read_label_map(tmp_path / "neg.tif")
