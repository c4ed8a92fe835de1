"""What every map goes through (`onnxcam.methods.maps`): min-max normalization with the all-zero
flag, and the one-pass heatmaps equal to resize-then-normalize."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam.methods.maps import heatmaps, normalize_maps, resize_maps


def test_normalize_maps_flags_constant_maps():
    maps = np.stack([np.full((4, 4), 3.0), np.zeros((4, 4)), np.arange(16.0).reshape(4, 4),
                     np.full((4, 4), np.nan)]).astype(np.float32)
    maps[0, 0, 0] = np.nextafter(np.float32(3.0), np.float32(4.0))  # float32 rounding noise
    normalized, zero = normalize_maps(maps)
    assert zero.tolist() == [True, True, False, True]
    assert np.isfinite(normalized).all() and (normalized[zero] == 0).all()
    assert normalized[2].min() == 0 and normalized[2].max() == 1


def test_normalization_order_is_equivalent():
    """pytorch-grad-cam's min-max -> resize -> min-max equals onnxcam's resize -> min-max."""
    raw = np.maximum(np.random.default_rng(0).normal(size=(5, 7)), 0).astype(np.float32)
    theirs = cv2.resize((raw - raw.min()) / (1e-7 + (raw - raw.min()).max()), (64, 48))
    theirs = (theirs - theirs.min()) / (1e-7 + (theirs - theirs.min()).max())
    ours = normalize_maps(resize_maps(raw, (48, 64)))[0]
    assert np.abs(ours - theirs).max() <= 1e-6


@pytest.mark.parametrize("shape,size", [((3, 2, 7, 7), (224, 224)), ((2, 2, 14, 9), (160, 96)),
                                        ((2, 3, 40, 30), (40, 30))])
def test_heatmaps_equal_resize_then_normalize(shape, size):
    """The explainer's map-by-map OpenCV path gives normalize_maps(resize_maps(...)) exactly,
    flags included: constant, NaN, infinite, negative, tiny-span and same-size maps."""
    rng = np.random.default_rng(1)
    raw = rng.normal(size=shape).astype(np.float32) * 10.0 ** rng.integers(-3, 4, size=shape[:2] + (1, 1))
    raw[0, 0] = 2.5  # constant
    raw[-1, 0, 1, 2] = np.nan
    raw[-1, -1, 0, 0] = np.inf
    raw[1 % shape[0], -1] = 1000.0 + rng.normal(size=shape[2:]) * 1e-5  # a span near float32 rounding
    ours, ours_zero = heatmaps(raw, size)
    reference, reference_zero = normalize_maps(resize_maps(raw, size))
    np.testing.assert_array_equal(ours_zero, reference_zero)
    np.testing.assert_array_equal(ours, reference)
    assert ours.dtype == np.float32 and ours.min() >= 0.0 and ours.max() <= 1.0
    assert reference_zero[0, 0] and reference_zero[-1, 0] and reference_zero[-1, -1] and not reference_zero.all()
