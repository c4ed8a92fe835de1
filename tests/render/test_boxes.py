"""Weakly-supervised boxes from heatmaps (`onnxcam.render.boxes`, `ExplainResult.boxes`)."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import OnnxcamError
from onnxcam.render.boxes import Box, map_boxes
from support.images import random_rgb


def two_blobs() -> np.ndarray:
    """A 60 x 80 map: a big blob (peak 1) at rows 10-29, columns 5-34, a small one (0.5) at
    rows 40-49, columns 60-69, and a faint plateau (0.1) elsewhere in its top-left corner."""
    heat = np.zeros((60, 80), np.float32)
    heat[:5, :5] = 0.1
    heat[10:30, 5:35] = 0.6
    heat[15, 20] = 1.0
    heat[40:50, 60:70] = 0.5
    return heat


def test_largest_segment_above_fifteen_percent_of_the_peak():
    assert map_boxes(two_blobs()) == [Box(5, 10, 35, 30)]
    assert map_boxes(two_blobs(), 0.55) == [Box(5, 10, 35, 30)]
    assert map_boxes(two_blobs(), 0.7) == [Box(20, 15, 21, 16)]


def test_all_segments_above_a_size():
    assert map_boxes(two_blobs(), mode="all") == [Box(5, 10, 35, 30), Box(60, 40, 70, 50)]
    # the plateau is 25 pixels of 4800: under the default 1 % of the image, kept with no minimum
    assert map_boxes(two_blobs(), "peak:0.05", mode="all") == [Box(5, 10, 35, 30), Box(60, 40, 70, 50)]
    assert map_boxes(two_blobs(), "peak:0.05", mode="all", min_area=0.0) == [
        Box(5, 10, 35, 30), Box(60, 40, 70, 50), Box(0, 0, 5, 5)]
    # the small blob is 100 pixels of 4800: kept at 2 %, dropped at 3 %
    assert len(map_boxes(two_blobs(), mode="all", min_area=0.02)) == 2
    assert map_boxes(two_blobs(), mode="all", min_area=0.03) == [Box(5, 10, 35, 30)]


def test_diagonal_pixels_are_one_segment_and_boxes_cover_them():
    heat = np.eye(6, dtype=np.float32)
    assert map_boxes(heat) == [Box(0, 0, 6, 6)]
    assert map_boxes(heat)[0].area == 36


def test_a_map_without_positive_values_has_no_box():
    assert map_boxes(np.zeros((4, 4))) == []
    assert map_boxes(np.full((4, 4), np.nan)) == []


@pytest.mark.parametrize("options,message", [
    ({"rule": 0}, "box rule: peak takes a value in \\(0, 1\\], got 0"), ({"rule": "mass:1.5"}, "mass takes a value"),
    ({"rule": "otsu:0.3"}, "otsu takes no value"), ({"rule": "median"}, "expected peak:F, mass:F or otsu"),
    ({"rule": "peak:x"}, "peak needs a number"), ({"mode": "biggest"}, "mode"), ({"min_area": 1.5}, "min_area")])
def test_bad_options(options, message):
    with pytest.raises(OnnxcamError, match=message):
        map_boxes(two_blobs(), **options)


def test_result_boxes_are_in_the_images_own_pixels(synthetic_explainer):
    """A 90 x 120 photo through a 24 x 32 network: boxes lie in 120 x 90 pixel space, and a
    flagged (all-zero) map has none."""
    result = synthetic_explainer.explain(random_rgb(90, 120, seed=3), targets=[0, 2])
    (box,) = result.boxes(0, 0)
    assert 0 <= box.x0 < box.x1 <= 120 and 0 <= box.y0 < box.y1 <= 90
    peak = np.unravel_index(np.argmax(result.heatmaps[0][0]), (90, 120))
    assert box.y0 <= peak[0] < box.y1 and box.x0 <= peak[1] < box.x1
    assert result.zero_maps[0, 1] and result.boxes(0, 1) == []
