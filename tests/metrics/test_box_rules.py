"""Box rules, MaxBoxAccV2 and the calibration that picks a rule, on maps whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import OnnxcamError
from onnxcam.metrics.base import MetricResult
from onnxcam.metrics.box_calibration import CANDIDATES, calibrate, matched, rule_score
from onnxcam.metrics.localization import BOXACC_THRESHOLDS, box_accuracy_curves
from onnxcam.render.boxes import Box, MassShare, PeakFraction, map_boxes, parse_rule


def two_levels() -> np.ndarray:
    """A 40 x 60 map: 100 pixels at 1 (rows 5-14, columns 5-14), 100 at 0.5 (rows 20-29,
    columns 40-49), the rest 0: mass 100 + 50."""
    heat = np.zeros((40, 60), np.float32)
    heat[5:15, 5:15] = 1.0
    heat[20:30, 40:50] = 0.5
    return heat


def test_mass_share_keeps_the_fewest_pixels_holding_the_share():
    first, second = Box(5, 5, 15, 15), Box(40, 20, 50, 30)
    # 60 % of 150 = 90: the 100 pixels at 1 hold 100 already
    assert map_boxes(two_levels(), "mass:0.6", mode="all") == [first]
    # 80 % = 120: every pixel at 0.5 ties with the last one needed, so all of them join
    assert map_boxes(two_levels(), "mass:0.8", mode="all") == [first, second]
    assert map_boxes(two_levels(), MassShare(1.0), mode="all") == [first, second]


def test_otsu_matches_a_brute_force_otsu():
    """Otsu's threshold maximizes w0 * w1 * (mu0 - mu1)^2 over the 256 levels; computed here
    from its definition on a noisy two-blob map."""
    rng = np.random.default_rng(0)
    heat = np.clip(two_levels() + 0.05 * rng.random((40, 60)), 0, None).astype(np.float32)
    levels = np.round(heat / heat.max() * 255).astype(int).ravel()
    best, split = -1.0, 0
    for t in range(256):
        low, high = levels[levels <= t], levels[levels > t]
        if len(low) and len(high):
            between = len(low) * len(high) * (low.mean() - high.mean()) ** 2
            if between > best:
                best, split = between, t
    expected = map_boxes(heat, PeakFraction((split + 0.5) / 255), mode="all")
    assert map_boxes(heat, "otsu", mode="all") == expected
    assert len(expected) == 2  # both blobs stand above the noise


def test_rule_specs_round_trip():
    for rule in CANDIDATES:
        assert parse_rule(str(rule)) == rule
    assert parse_rule(0.3) == parse_rule("peak:0.3") == PeakFraction(0.3)
    assert str(parse_rule(" OTSU ")) == "otsu"


def nested(truth: Box, core: float, halo: float, shape=(100, 100)) -> np.ndarray:
    """1 on the middle ninth of ``truth``, ``core`` on the rest of it and ``halo`` on a band 10
    pixels around it: the box is exact for peak fractions in (halo, core]."""
    heat = np.zeros(shape, np.float32)
    heat[max(truth.y0 - 10, 0):truth.y1 + 10, max(truth.x0 - 10, 0):truth.x1 + 10] = halo
    heat[truth.y0:truth.y1, truth.x0:truth.x1] = core
    h, w = truth.y1 - truth.y0, truth.x1 - truth.x0
    heat[truth.y0 + h // 3:truth.y1 - h // 3, truth.x0 + w // 3:truth.x1 - w // 3] = 1.0
    return heat


def test_maxboxacc_is_the_best_thresholds_accuracy_by_hand():
    """Three 30 x 30 objects whose maps box them exactly at peak fractions in (0.25, 0.625],
    (0.5, 0.875] and (0.75, 1) (values exact in binary): no threshold serves all three at IoU
    0.5 or 0.7, the best serve two.
    At IoU 0.3 the halo's box (IoU 900 / 2500 = 0.36) counts too, so every threshold in
    (0, 0.625] serves all three: MaxBoxAccV2 = (100 + 2/3 + 2/3) / 3."""
    truths = [Box(20, 20, 50, 50), Box(40, 30, 70, 60), Box(50, 50, 80, 80)]
    maps = [nested(truths[0], 0.625, 0.25), nested(truths[1], 0.875, 0.5), nested(truths[2], 1.0, 0.75)]
    curves = np.stack([box_accuracy_curves(heat, [truth]) for heat, truth in zip(maps, truths)])
    for m, (low, high) in enumerate([(0.25, 0.625), (0.5, 0.875), (0.75, 1.0)]):
        exact = (BOXACC_THRESHOLDS > low) & (BOXACC_THRESHOLDS <= high)
        np.testing.assert_array_equal(curves[m, 1] == 100, exact)  # IoU 0.5
        np.testing.assert_array_equal(curves[m, 2] == 100, exact)  # IoU 0.7
        np.testing.assert_array_equal(curves[m, 0] == 100, (BOXACC_THRESHOLDS > 0) & (BOXACC_THRESHOLDS <= high))
    names = ("boxacc_30", "boxacc_50", "boxacc_70")
    result = MetricResult("localization", {}, np.zeros((3, 1), bool),
                          {name: curves[:, None, i] for i, name in enumerate(names)}, {"maxboxacc": names})
    assert result.mean["maxboxacc"] == pytest.approx((100 + 200 / 3 + 200 / 3) / 3)
    assert result.counts["maxboxacc"] == 3
    assert result.subset(np.array([True, False, False])).mean["maxboxacc"] == pytest.approx(100.0)


def test_maxboxacc_hits_follow_iou():
    """A map that is a box twice the truth's area everywhere: IoU 0.5 at every threshold above 0."""
    heat = np.zeros((50, 50), np.float32)
    heat[10:30, 10:30] = 1.0
    hits = box_accuracy_curves(heat, [Box(10, 10, 30, 20)])  # half the segment: IoU 0.5
    assert (hits[0, 1:] == 100).all() and (hits[1, 1:] == 100).all() and (hits[2] == 0).all()
    assert hits[0, 0] == 0  # threshold 0 keeps the whole 50 x 50 map: IoU 200 / 2500


def synthetic_set(seed: int, count: int = 24) -> list:
    """Maps whose object box is exact for peak fractions in (0.35, 0.6]; every fourth map holds
    two objects (two boxes of one class)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for n in range(count):
        heat = np.zeros((120, 160), np.float32)
        truth = []
        for _ in range(2 if n % 4 == 0 else 1):
            w, h = rng.integers(24, 40, 2)
            x = int(rng.integers(12 + 80 * len(truth), 80 * len(truth) + 80 - w - 12))
            y = int(rng.integers(12, 120 - h - 12))
            box = Box(x, y, x + int(w), y + int(h))
            heat = np.maximum(heat, nested(box, 0.6, 0.35, heat.shape))
            truth.append(box)
        pairs.append((heat, truth))
    return pairs


def test_calibration_picks_the_threshold_that_boxes_the_objects():
    fit = calibrate(synthetic_set(1))
    assert fit.rule in {PeakFraction(f) for f in (0.4, 0.45, 0.5, 0.55, 0.6)}
    assert fit.score(fit.rule) == pytest.approx(100.0)
    # the paper's 15 % boxes the halo (IoU about 0.5) and the highest fractions only the core
    assert fit.scores["peak:0.15"] < 60 and fit.scores["peak:0.95"] < 40
    assert fit.pairs == 24
    # among peak rules alone the first perfect one wins
    peaks = [rule for rule in CANDIDATES if rule.kind == "peak"]
    assert calibrate(synthetic_set(2), peaks).rule == PeakFraction(0.4)


def test_rule_score_counts_missed_and_extra_boxes():
    a, b = Box(0, 0, 10, 10), Box(20, 0, 30, 10)
    assert matched([a, b], [b, a], 0.5) == 2 and matched([a], [b], 0.1) == 0
    heat = np.zeros((40, 40), np.float32)
    heat[0:10, 0:10] = 1.0
    heat[0:10, 20:30] = 1.0
    assert rule_score(PeakFraction(0.5), heat, [a]) == 1.0  # one truth: the largest segment only
    assert rule_score(PeakFraction(0.5), heat, [a, b]) == 1.0
    assert rule_score(PeakFraction(0.5), heat, [a, b, Box(0, 30, 10, 40)]) == pytest.approx(2 / 3)
    assert rule_score(PeakFraction(0.5), np.zeros((40, 40), np.float32), [a]) == 0.0


def test_calibration_without_maps_is_refused():
    with pytest.raises(OnnxcamError, match="no map with boxes"):
        calibrate([])
