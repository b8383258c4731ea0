"""CT windows and MR percentile normalization."""

from __future__ import annotations

import numpy as np
import pytest

from samtune.data.datasets.volumes import (
    WINDOW_PRESETS,
    PercentileNormalization,
    Window,
    resolve_intensity,
    resolve_window,
    to_uint8,
)


def test_abdomen_window_endpoints_midpoints_and_clipping():
    window = resolve_window("abdomen")
    assert (window.level, window.width) == (40, 400)
    hu = np.array([-1000, -161, -160, -80, 40, 240, 241, 3000], dtype=np.float32)
    # -80 is 80/400 of the way: 0.2 * 255 = 51 exactly; 40 is the centre: 127.5 rounds up.
    assert window(hu).tolist() == [0, 0, 0, 51, 128, 255, 255, 255]
    assert window(hu).dtype == np.uint8


@pytest.mark.parametrize(
    ("name", "lower", "upper"),
    [("lung", -1350, 150), ("bone", -500, 1300), ("brain", 0, 80), ("Abdomen", -160, 240)],
)
def test_presets_map_their_bounds_to_0_and_255(name, lower, upper):
    window = resolve_window(name)
    assert window(np.array([lower - 1, lower, upper, upper + 1])).tolist() == [0, 0, 255, 255]


def test_explicit_window_mapping():
    window = resolve_intensity(window={"level": 50, "width": 350})
    assert window == Window(level=50, width=350)
    # lower = -125; HU -125 + 350 * 102 / 255 = 15 maps to 102 exactly.
    assert window(np.array([-125.0, 15.0, 225.0])).tolist() == [0, 102, 255]


def test_window_validation_errors():
    with pytest.raises(ValueError, match=r"unknown CT window preset 'liver'.*abdomen"):
        resolve_window("liver")
    with pytest.raises(ValueError, match="level and width"):
        resolve_window({"level": 40})
    with pytest.raises(ValueError, match="level and width"):
        resolve_window({"level": 40, "width": 400, "center": 3})
    with pytest.raises(ValueError, match="width > 0"):
        resolve_window({"level": 40, "width": 0})
    with pytest.raises(ValueError, match="must be a number"):
        resolve_window({"level": "40", "width": 400})
    with pytest.raises(ValueError, match="not both"):
        resolve_intensity(window="abdomen", normalize="percentile")
    with pytest.raises(ValueError, match="unknown normalization"):
        resolve_intensity(normalize="zscore")
    assert set(WINDOW_PRESETS) == {"abdomen", "lung", "bone", "brain"}


def test_percentile_normalization_over_nonzero_voxels():
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 20, 10), dtype=np.float32)
    volume[5:15, 5:15, 2:8] = rng.uniform(100, 1000, size=(10, 10, 6))
    normalize = resolve_intensity(normalize="percentile")
    assert normalize == PercentileNormalization(lower=0.5, upper=99.5)
    low, high = np.percentile(volume[volume != 0], [0.5, 99.5])
    assert normalize.range_for(volume) == pytest.approx((low, high))
    probe = np.array([0.0, low, high, 2000.0])
    out = np.asarray(normalize(volume))
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0
    expected = np.clip(np.floor((volume - low) / (high - low) * 255 + 0.5), 0, 255)
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert to_uint8(probe, low, high).tolist() == [0, 0, 255, 255]


def test_percentile_options_and_degenerate_volumes():
    volume = np.arange(1, 101, dtype=np.float32).reshape(10, 10, 1)
    custom = resolve_intensity(normalize={"lower": 10, "upper": 90, "nonzero_only": False})
    assert custom.range_for(volume) == pytest.approx(tuple(np.percentile(volume, [10, 90])))
    constant = np.full((4, 4, 2), 7.0)
    assert PercentileNormalization()(constant).tolist() == np.zeros((4, 4, 2), np.uint8).tolist()
    assert PercentileNormalization()(np.zeros((3, 3, 3))).max() == 0
    with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
        PercentileNormalization(lower=99, upper=1)
    with pytest.raises(ValueError, match="unknown percentile normalization keys"):
        resolve_intensity(normalize={"low": 1})
