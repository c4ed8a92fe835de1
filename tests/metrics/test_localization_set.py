"""The localization set on the real pretrained EfficientNet-Lite0: Grad-CAM's default boxes hold
on the test split's 2x2 mosaics and the cat|espresso composite; the shipped rules are those the
benchmark measured."""
from __future__ import annotations

import json

import numpy as np

from benchmarks import localization_set
from benchmarks.localization import NOT_ON, RESULTS
from onnxcam import Explainer
from onnxcam.methods.registry import METHODS
from onnxcam.metrics.localization import Localization, iou
from onnxcam.render.boxes import SHIPPED_RULES, Box, rule_for


def test_shipped_rules_are_the_measured_ones():
    measured = json.loads(RESULTS.read_text())["chosen"]
    assert SHIPPED_RULES == measured
    assert set(measured) == set(METHODS) - set(NOT_ON)


def test_the_set_is_the_same_on_every_build():
    first, second = localization_set.cases(), localization_set.cases()
    assert [name for _, name, _, _ in first] == [name for _, name, _, _ in second]
    assert all(np.array_equal(a[2], b[2]) and a[3] == b[3] for a, b in zip(first, second))
    splits = [split for split, *_ in first]
    assert abs(splits.count("calibration") - splits.count("test")) <= 1
    for _, name, image, boxes in first:
        height, width = image.shape[:2]
        assert all(0 <= b["box"][0] < b["box"][2] <= width and 0 <= b["box"][1] < b["box"][3] <= height for b in boxes)


def test_gradcam_default_boxes_on_the_test_mosaics(lite0):
    """The issue's bar: each tile's class, its Grad-CAM box by the shipped rule has IoU >= 0.5
    with the tile in at least 80 % of the maps, and the map's peak lies in the tile (15 px
    tolerance) in at least 90 %."""
    explainer = Explainer(lite0[1])
    rule = rule_for("gradcam", explainer.info.box_rules)
    assert str(rule) == SHIPPED_RULES["gradcam"]
    hits, points = [], []
    for split, name, image, boxes in localization_set.cases():
        if split != "test" or not name.startswith(("mosaic2x2", "cat_espresso")):
            continue
        logits = explainer.explain(image).logits[0]
        targets = {int(max(b["class"], key=lambda c: logits[c])): Box(*b["box"]) for b in boxes}
        assert len(targets) == len(boxes)  # different classes in every tile
        result = explainer.explain(image, targets=list(targets))
        for k, truth in enumerate(targets.values()):
            found = result.boxes(0, k)
            hits.append(bool(found) and iou(found[0], truth) >= 0.5)
            points.append(Localization().one(result.heatmaps[0][k], [truth], rule)["pointing"] == 100.0)
    assert len(hits) == 4 * 40 + 2
    assert np.mean(hits) >= 0.8, np.mean(hits)
    assert np.mean(points) >= 0.9, np.mean(points)
