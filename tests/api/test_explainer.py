"""`Explainer` (`onnxcam.api.explainer`) against a synthetic explain-graph and its numpy reference
(tests/support/graphs.py): Grad-CAM, preprocessing, targets and ranks, batching, flags, errors."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam import Explainer, OnnxcamError
from onnxcam.images.geometry import fit
from support.graphs import SyntheticModel, make_explain_graph
from support.images import random_rgb, write_image
from support.plain_models import softmax


def batch(n: int, seed: int = 2, size=(24, 32)) -> np.ndarray:
    """Normalized inputs whose top classes differ between images."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3) + size) + rng.normal(0, 2, (n, 3, 1, 1))
    return x.astype(np.float32)


def reference_heatmaps(synthetic: SyntheticModel, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Reference: raw Grad-CAM -> cv2 bilinear resize to the input size -> min-max."""
    raw = synthetic.gradcam(x, classes)
    h, w = x.shape[2:]
    out = np.zeros(raw.shape[:2] + (h, w))
    for i in range(raw.shape[0]):
        for k in range(raw.shape[1]):
            m = cv2.resize(raw[i, k], (w, h), interpolation=cv2.INTER_LINEAR)
            out[i, k] = (m - m.min()) / (m.max() - m.min())
    return out


def test_gradcam_matches_numpy_reference(synthetic, synthetic_explainer):
    x = batch(4)
    result = synthetic_explainer.explain(x, normalized=True)
    ref_logits = synthetic.logits(x)
    assert len(set(ref_logits.argmax(axis=1))) > 1  # the images disagree, so ranks matter
    np.testing.assert_allclose(result.logits, ref_logits, atol=1e-4)
    np.testing.assert_array_equal(result.classes[:, 0], ref_logits.argmax(axis=1))
    np.testing.assert_allclose(result.raw_maps, synthetic.gradcam(x, result.classes), rtol=1e-4, atol=1e-6)
    expected = reference_heatmaps(synthetic, x, result.classes)
    for i in range(4):
        assert result.heatmaps[i].shape == (1, 24, 32)
        assert np.abs(result.heatmaps[i] - expected[i]).max() <= 1e-5
    assert not result.zero_maps.any()
    assert result.images is None


def test_image_file_goes_through_preprocessing(synthetic, synthetic_explainer, tmp_path):
    rgb = random_rgb(24, 32)  # the input size, so "stretch" is the identity
    path = write_image(tmp_path / "img.png", rgb)
    result = synthetic_explainer.explain(path)
    info = synthetic.info
    x = ((rgb / 255.0 - np.array(info.mean)) / np.array(info.std)).transpose(2, 0, 1)[None]
    expected = reference_heatmaps(synthetic, x, result.classes)
    assert np.abs(result.heatmaps[0] - expected[0]).max() <= 1e-5
    np.testing.assert_array_equal(result.images[0], rgb)
    assert result.label(0) == f"class_{result.classes[0, 0]}"


def test_negative_targets_are_ranks(synthetic, synthetic_explainer):
    x = batch(4, seed=3)
    result = synthetic_explainer.explain(x, normalized=True, targets=[-1, -2, -3])
    ref_logits = synthetic.logits(x)
    np.testing.assert_array_equal(result.classes, np.argsort(-ref_logits, axis=1)[:, :3])
    expected_probs = np.take_along_axis(softmax(ref_logits), result.classes, axis=1)
    np.testing.assert_allclose(result.probs, expected_probs, atol=1e-5)
    same = synthetic_explainer.explain(x, normalized=True, top_k=3)
    np.testing.assert_array_equal(same.classes, result.classes)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("k", [1, 3])
def test_batch_and_target_counts_share_one_file(synthetic_explainer, n, k):
    """Any number of images of their own sizes and of targets runs through the one file, and
    each (image, target) map is the one that image and that class alone give."""
    images = [random_rgb(30 + 7 * i, 20 + 5 * i, seed=i) for i in range(n)]
    result = synthetic_explainer.explain(images, top_k=k)
    assert result.classes.shape == result.probs.shape == result.zero_maps.shape == (n, k)
    assert result.logits.shape == (n, 5) and result.raw_maps.shape == (n, k, 12, 16)
    assert len(result) == n
    for i, (image, heat) in enumerate(zip(images, result.heatmaps)):
        assert heat.shape == (k,) + image.shape[:2] and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1 and np.isfinite(heat).all()
        for j in range(k):
            alone = synthetic_explainer.explain(image, targets=int(result.classes[i, j]))
            np.testing.assert_allclose(alone.raw_maps[0, 0], result.raw_maps[i, j], rtol=1e-5, atol=1e-6)
            assert np.abs(alone.heatmaps[0][0] - heat[j]).max() <= 1e-5


def test_explicit_target_forms(synthetic_explainer):
    x = batch(3)
    assert (synthetic_explainer.explain(x, normalized=True, targets=4).classes == 4).all()
    np.testing.assert_array_equal(synthetic_explainer.explain(x, normalized=True, targets=[1, 3]).classes,
                                  [[1, 3]] * 3)
    per_image = np.array([[0], [1], [-1]])
    classes = synthetic_explainer.explain(x, normalized=True, targets=per_image).classes
    np.testing.assert_array_equal(classes[:2, 0], [0, 1])


def test_batching_does_not_change_results(synthetic_explainer):
    images = [random_rgb(20, 20 + i, seed=i) for i in range(7)]
    small = synthetic_explainer.explain(images, top_k=2, batch_size=3)
    large = synthetic_explainer.explain(images, top_k=2, batch_size=8)
    np.testing.assert_array_equal(small.classes, large.classes)
    for a, b in zip(small.heatmaps, large.heatmaps):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_zero_map_is_flagged_without_nan(synthetic_explainer):
    result = synthetic_explainer.explain(batch(2), normalized=True, targets=[2, -1])
    assert result.zero_maps[:, 0].all() and not result.zero_maps[:, 1].any()
    assert all(np.isfinite(h).all() and (h[0] == 0).all() for h in result.heatmaps)


def test_bad_explain_arguments(synthetic_explainer):
    with pytest.raises(OnnxcamError, match="method: unknown CAM method 'nope'.*gradcam"):
        synthetic_explainer.explain(batch(1), normalized=True, method="nope")
    with pytest.raises(OnnxcamError, match=r"normalized=True expected a float32 \[N, 3, 24, 32\]"):
        synthetic_explainer.explain(np.zeros((1, 3, 8, 8), np.float32), normalized=True)
    with pytest.raises(OnnxcamError, match="pass normalized=True"):
        synthetic_explainer.explain(batch(1))
    with pytest.raises(OnnxcamError, match=r"images\[1\]: expected an HxWx3"):
        synthetic_explainer.explain([random_rgb(5, 5), np.zeros((5, 5, 3), np.float32)])
    with pytest.raises(OnnxcamError, match="top_k: must be between 1 and 5"):
        synthetic_explainer.explain(batch(1), normalized=True, top_k=6)


def test_stretch_geometry_covers_whole_image(synthetic_explainer):
    image = random_rgb(50, 70)
    result = synthetic_explainer.explain(image)
    assert result.heatmaps[0].shape == (1, 50, 70)
    _, geometry = fit(image, synthetic_explainer.info)
    np.testing.assert_allclose(geometry.to_original(np.ones((24, 32), np.float32)), 1.0)


def test_crop_model_end_to_end(tmp_path):
    model = make_explain_graph(tmp_path / "crop.onnx", input_size=(16, 16), resize="crop",
                               resize_size=20)
    result = Explainer(model.path).explain(random_rgb(40, 60))
    heat = result.heatmaps[0][0]
    assert heat.shape == (40, 60) and (heat[:, :6] == 0).all() and (heat[:, -6:] == 0).all()
    assert heat.max() == pytest.approx(1.0, abs=0.05)


def test_a_method_kept_by_name_does_not_stand_in_for_one_asked_with_options(synthetic_explainer):
    plain = synthetic_explainer.method("rise")
    assert synthetic_explainer.method(" RISE ") is plain  # checked once, then reused
    asked = synthetic_explainer.method("rise", samples=7)
    assert asked is not plain and asked.samples == 7 and plain.samples != 7
    assert synthetic_explainer.method("rise") is plain

