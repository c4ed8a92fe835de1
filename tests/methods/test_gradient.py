"""The CAM weights (`onnxcam.methods.gradient`, `onnxcam.methods.base`): pixelwise weights
through the same hook, layer fusion, and the registry by name."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import OnnxcamError
from onnxcam.methods.base import CAMMethod
from onnxcam.methods.gradient import GradCAM
from onnxcam.methods.maps import fuse_layers, normalize_maps, resize_maps
from onnxcam.methods.registry import get_method


def test_pixelwise_weights_and_layer_fusion():
    """A method that only supplies pixelwise weights gets ReLU(sum_c W_c A_c); two layers are
    each Grad-CAM'd, min-max normalized at their own resolution, resized to the larger and
    averaged."""
    rng = np.random.default_rng(0)
    acts, grads = rng.random((2, 4, 3, 3)), rng.normal(size=(2, 1, 4, 3, 3))

    class Elementwise(CAMMethod):  # HiResCAM-style pixelwise weights through the same hook
        def weights(self, activations, gradients):
            return gradients

    expected = np.maximum((grads * acts[:, None]).sum(axis=2), 0)
    np.testing.assert_allclose(Elementwise()([(acts, grads)]), expected, rtol=1e-5, atol=1e-6)
    wide = (rng.random((2, 4, 6, 6)), rng.normal(size=(2, 1, 4, 6, 6)))
    fused = GradCAM()([(acts, grads), wide])
    per_layer = [np.maximum(np.einsum("nkc,nchw->nkhw", g.mean(axis=(3, 4)), a), 0) for a, g in ((acts, grads), wide)]
    expected = (resize_maps(normalize_maps(per_layer[0])[0], (6, 6)) + normalize_maps(per_layer[1])[0]) / 2
    assert fused.shape == (2, 1, 6, 6)
    np.testing.assert_allclose(fused, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fuse_layers(per_layer), expected, rtol=1e-5, atol=1e-6)
    assert fuse_layers(per_layer[:1]) is per_layer[0]  # one layer: as it is


def test_get_method():
    assert isinstance(get_method("GradCAM"), GradCAM)
    with pytest.raises(OnnxcamError, match="choose from: gradcam, cam, gradcam[+][+], .*scorecam"):
        get_method("nope")

