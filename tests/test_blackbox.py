"""Gradient-free methods on plain classifier files (no export), and format version 2's
preprocessing (channel order, layout, pixel scale)."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
import torch

from plain_models import softmax, tiny_classifier
from test_cli_export import one_line_error, onnxcam

from onnxcam.artifact import ArtifactInfo
from onnxcam.blackbox import RISE, Occlusion
from onnxcam.errors import OnnxcamError
from onnxcam.imageops import preprocess
from onnxcam.plain import PlainExplainer, open_explainer
from onnxcam.preprocessing import Preprocessing

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


def test_black_box_on_an_explain_graph_uses_its_logits(tmp_path):
    """RISE runs on an explain-graph too (its forward passes give the logits)."""
    from onnxcam.explainer import Explainer

    from onnxcam_export import export
    from conftest import digits_cnn

    model, x, _ = digits_cnn()
    graph = tmp_path / "digits.onnx"
    export(model, graph, ["conv2"], input_size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    plain = tmp_path / "digits_plain.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(plain), input_names=["x"], output_names=["y"],
                      dynamo=True, dynamic_shapes=({0: torch.export.Dim("N")},))
    method = RISE(samples=50, cells=3)
    a = Explainer(graph).explain(x[:2], method=method, normalized=True, top_k=1)
    b = PlainExplainer(plain, Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)).explain(
        x[:2], method=method, normalized=True, top_k=1)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.raw_maps, b.raw_maps, rtol=1e-4, atol=1e-6)
    assert isinstance(open_explainer(graph), Explainer) and isinstance(open_explainer(plain), PlainExplainer)
    with pytest.raises(OnnxcamError, match="carries its own preprocessing"):
        open_explainer(graph, Preprocessing(scale=255))


def test_preprocess_honours_channels_layout_and_scale():
    """Version 2's fields: BGR order, NHWC layout and 0-255 pixels, against the formula."""
    image = skimage.data.astronaut()[:40, :60]
    info = ArtifactInfo(layers=[], input_size=(20, 30), mean=[104, 117, 123], std=[1, 2, 4], num_classes=2,
                        channels="BGR", layout="NHWC", scale=255)
    batch, _ = preprocess([image], info)
    resized = cv2.resize(image, (30, 20), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized[:, :, ::-1] - np.array([104, 117, 123], np.float32)) / np.array([1, 2, 4], np.float32)
    assert batch.shape == (1, 20, 30, 3)
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6)


def test_format_version_1_metadata_reads_as_before():
    """A version-1 file's metadata (no scale) is read as scale 1, RGB, NCHW: the same input."""
    old = json.dumps({"format_version": 1, "layers": ["layer4"], "input_size": [8, 8], "mean": [0.5, 0.4, 0.3],
                      "std": [0.2, 0.2, 0.2], "num_classes": 3, "layout": "NCHW", "channels": "RGB"})
    info = ArtifactInfo.from_json(old)
    image = skimage.data.coffee()[:8, :8]
    batch, _ = preprocess([image], info)
    expected = ((image.astype(np.float32) / 255.0 - np.array([0.5, 0.4, 0.3], np.float32))
                / np.float32(0.2)).transpose(2, 0, 1)
    assert info.scale == 1 and info.format_version == 1
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6, atol=1e-6)  # one scale and offset: ulps apart


def test_bad_preprocessing_is_one_error(tmp_path):
    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE)
    with pytest.raises(OnnxcamError, match="mean, std"):
        PlainExplainer(path, Preprocessing(std=(1.0, 0.0, 1.0)))
    with pytest.raises(OnnxcamError, match="--input-size.*24x24"):
        PlainExplainer(path, Preprocessing(input_size=(32, 32)))
    with pytest.raises(OnnxcamError, match="--output-name.*logits"):
        PlainExplainer(path, Preprocessing(output="probs"))
    with pytest.raises(OnnxcamError, match="gradcam needs an explain-graph"):
        PlainExplainer(path).method("gradcam")


def test_cli_explains_a_plain_file(tmp_path):
    """`onnxcam explain plain.onnx img --method rise,occlusion` with the preprocessing on the
    command line writes overlays and the grid; a gradient method is one error line."""
    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE, layout="NHWC", softmax=True)
    cv2.imwrite(str(tmp_path / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    proc = onnxcam("explain", str(path), "cat.png", "--method", "rise,occlusion", "--samples", "32",
                   "--channels", "bgr", "--scale", "255", "--mean", "104", "117", "123", "--std", "1", "1", "1",
                   "--labels", "labels.txt", "--top-k", "2", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[0])
    assert record["methods"] == ["rise", "occlusion"] and len(record["overlays"]) == 4
    assert set(record["labels"]) <= set("abcde") and abs(sum(record["probs"])) <= 1.0
    overlay = cv2.imread(str(tmp_path / record["overlays"][0]))
    assert overlay.shape == skimage.data.chelsea().shape
    one_line_error(onnxcam("explain", str(path), "cat.png", "--method", "gradcam", cwd=tmp_path),
                   "gradcam needs an explain-graph", "onnxcam export")
    one_line_error(onnxcam("explain", str(path), "cat.png", "--method", "rise", "--layout", "nchw", cwd=tmp_path),
                   "has 24 channels")


def test_rise_mass_follows_the_object(lite0):
    """On a real photo (Chelsea beside an espresso, pretrained EfficientNet-Lite0), RISE's map
    for the cat lies mostly on the cat's half and the map for espresso on the cup's half (RISE's
    maps are diffuse: 384 masks of 8x8 cells)."""
    from onnxcam.explainer import Explainer
    from test_pretrained import ESPRESSO, side_by_side

    image = side_by_side()
    split = skimage.data.chelsea().shape[1]
    explainer = Explainer(lite0[1])
    cat = int(explainer.explain(skimage.data.chelsea()).classes[0, 0])
    result = explainer.explain(image, method=RISE(samples=384), targets=[cat, ESPRESSO])
    cat_map, espresso_map = result.heatmaps[0]
    left = [float(m[:, :split].sum() / m.sum()) for m in (cat_map, espresso_map)]
    assert left[0] > 0.6 and left[1] < 0.45 and left[0] - left[1] > 0.2, left
