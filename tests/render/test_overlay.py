"""Overlays (`onnxcam.render.overlay`): JET colours blended over the photo, written as PNG."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import OnnxcamError, overlay  # overlay: the package's own name for it
from onnxcam.images.decode import load_image
from onnxcam.render.overlay import save_png
from support.images import random_rgb


def test_overlay_blends_jet_colors(tmp_path):
    image = random_rgb(6, 8)
    np.testing.assert_array_equal(overlay(image, np.zeros((6, 8)), alpha=0.0), image)
    hot = overlay(image, np.ones((3, 4)), alpha=1.0)  # resized to the image
    assert hot.shape == (6, 8, 3) and hot.dtype == np.uint8
    assert (hot[..., 0] > 100).all() and (hot[..., 2] == 0).all()  # JET's top is red, in RGB
    with pytest.raises(OnnxcamError, match="alpha: must be between 0 and 1"):
        overlay(image, np.zeros((6, 8)), alpha=2)
    written = save_png(tmp_path / "new" / "dir" / "o.png", hot)
    np.testing.assert_array_equal(load_image(written), hot)

