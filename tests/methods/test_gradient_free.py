"""Gradient-free methods (`onnxcam.methods.gradient_free`) on plain classifier files (no
export): RISE against a direct implementation, Occlusion against Captum, and RISE's mass on
a real photo."""
from __future__ import annotations

import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
import torch

from onnxcam.api.explainer import Explainer
from onnxcam.api.plain_files import PlainExplainer
from onnxcam.images.geometry import preprocess
from onnxcam.images.plain_input import Preprocessing
from onnxcam.methods.gradient_free import RISE, Occlusion
from support.photos import ESPRESSO, side_by_side
from support.plain_models import softmax, tiny_classifier

SIZE = 24


def rise_reference(session: ort.InferenceSession, x: np.ndarray, target: int, samples: int,
                   cells: int, probability: float, seed: int, channels_last: bool,
                   probabilities: bool) -> np.ndarray:
    """RISE written out directly, one masked image per run: Petsiuk et al.'s masks drawn as
    OpenVINO XAI draws them (grid, row shift, column shift per mask from one default_rng)."""
    h, w = (x.shape[1:3] if channels_last else x.shape[2:4])
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    rng = np.random.default_rng(seed)
    total = np.zeros((h, w))
    for _ in range(samples):
        grid = (rng.random((cells, cells)) < probability).astype(np.float32)
        dy, dx = rng.integers(0, cell_h), rng.integers(0, cell_w)
        big = cv2.resize(grid, ((cells + 1) * cell_w, (cells + 1) * cell_h), interpolation=cv2.INTER_CUBIC)
        mask = np.clip(big[dy:dy + h, dx:dx + w], 0, 1)
        masked = x * (mask[None, :, :, None] if channels_last else mask[None, None])
        out = session.run(None, {"x": masked.astype(np.float32)})[0]
        probs = out if probabilities else softmax(out)
        total += probs[0, target] * mask
    return total / (samples * probability)


@pytest.mark.parametrize("layout, softmax_output, batch", [
    ("NCHW", False, None), ("NHWC", True, 1)])
def test_rise_matches_a_direct_implementation(tmp_path, layout, softmax_output, batch):
    """Same masks, same numbers: the batched RISE on a plain file (logits or softmax output,
    dynamic or fixed batch, NCHW or NHWC) equals RISE run mask by mask through the session."""
    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE, layout=layout, softmax=softmax_output, batch=batch)
    explainer = PlainExplainer(path, Preprocessing(channels="bgr", scale=255, mean=(100, 110, 120), std=(50, 60, 70)))
    photo = skimage.data.astronaut()
    method = RISE(samples=96, cells=5, probability=0.4, seed=3)
    result = explainer.explain(photo, method=method, targets=[2], forward_batch_size=20)
    x, _ = preprocess([photo], explainer.info)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = rise_reference(session, x, 2, 96, 5, 0.4, 3, layout == "NHWC", softmax_output)
    got = result.raw_maps[0, 0]
    assert got.shape == (SIZE, SIZE) and result.classes[0, 0] == 2
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert np.ptp(got) > 0 and not result.zero_maps.any()


def test_rise_probabilities_are_the_files_own(tmp_path):
    """A softmax output is read as probabilities (not soft-maxed again): the explanation's probs
    are the file's outputs, and a file with and without the final softmax give the same map."""
    plain = tiny_classifier(tmp_path / "plain.onnx", SIZE, softmax=False)
    soft = tiny_classifier(tmp_path / "soft.onnx", SIZE, softmax=True)
    photo = skimage.data.coffee()
    a = PlainExplainer(plain).explain(photo, method=RISE(samples=40, cells=4), top_k=2)
    b = PlainExplainer(soft).explain(photo, method=RISE(samples=40, cells=4), top_k=2)
    x, _ = preprocess([photo], PlainExplainer(soft).info)
    file_probs = ort.InferenceSession(str(soft), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(b.probs[0], np.sort(file_probs[0])[::-1][:2], rtol=1e-5)
    np.testing.assert_allclose(a.raw_maps, b.raw_maps, rtol=1e-4, atol=1e-7)


def test_occlusion_matches_captum(tmp_path):
    """Occlusion equals Captum's Occlusion (zero baseline, the same window and stride) with
    the file's softmax probability as the forward function."""
    from captum.attr import Occlusion as CaptumOcclusion

    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE)
    explainer = PlainExplainer(path)
    photo = skimage.data.chelsea()
    result = explainer.explain(photo, method=Occlusion(window=6, stride=3), targets=[1])
    x, _ = preprocess([photo], explainer.info)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(softmax(session.run(None, {"x": batch.numpy()})[0]))

    reference = CaptumOcclusion(forward).attribute(torch.from_numpy(x), sliding_window_shapes=(3, 6, 6),
                                                   strides=(3, 3, 3), baselines=0.0, target=1)
    np.testing.assert_allclose(result.raw_maps[0, 0], reference[0, 0].numpy(), rtol=1e-4, atol=1e-7)


def test_occlusion_covers_the_border(tmp_path):
    """Windows that do not tile the input evenly still cover every pixel (the last ones sit
    flush with the border)."""
    method = Occlusion(window=7, stride=5)
    footprints = method.footprints((SIZE, SIZE), 0, method.count((SIZE, SIZE)))
    assert footprints.sum(axis=0).min() >= 1


def test_rise_mass_follows_the_object(lite0):
    """On a real photo (Chelsea beside an espresso, pretrained EfficientNet-Lite0), RISE's map
    for the cat lies mostly on the cat's half and the map for espresso on the cup's half (RISE's
    maps are diffuse: 384 masks of 8x8 cells)."""
    image = side_by_side()
    split = skimage.data.chelsea().shape[1]
    explainer = Explainer(lite0[1])
    cat = int(explainer.explain(skimage.data.chelsea()).classes[0, 0])
    result = explainer.explain(image, method=RISE(samples=384), targets=[cat, ESPRESSO])
    cat_map, espresso_map = result.heatmaps[0]
    left = [float(m[:, :split].sum() / m.sum()) for m in (cat_map, espresso_map)]
    assert left[0] > 0.6 and left[1] < 0.45 and left[0] - left[1] > 0.2, left
