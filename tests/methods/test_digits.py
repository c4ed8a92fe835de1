"""Every method on a small trained CNN (sklearn's 8x8 digits, GAP -> linear head): CAM against
Grad-CAM, the perturbation CAMs and layer fusion against pytorch-grad-cam, SmoothGrad against
Captum on the same noise, batching, old files, and the command line's figures."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest

from onnxcam import Explainer, OnnxcamError
from onnxcam.images.decode import load_image
from onnxcam.methods.registry import METHODS
from onnxcam.render.grid import GAP, MAX_COLUMNS, TILE_HEIGHT, TITLE_HEIGHT, tile_width
from onnxcam.render.overlay import gradient_image
from support.cli import one_error_line, run_cli
from support.graphs import make_explain_graph
from support.images import write_image
from support.torch_models import digits_cnn
from support.torch_reference import cosine, reference_cam

LABELS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(model, inputs [16, 3, 8, 8], folder, export(layers) -> path), with every output."""
    from onnxcam_export import export

    model, x, _ = digits_cnn()
    folder = tmp_path_factory.mktemp("digits_methods")
    paths: dict = {}

    def exported(*layers: str):
        if layers not in paths:
            paths[layers] = folder / f"digits_{'_'.join(layers)}.onnx"
            export(model, paths[layers], list(layers), input_size=(8, 8), mean=(0.5,) * 3,
                   std=(0.5,) * 3, labels=LABELS, guided=True, plain_input_gradient=True)
        return paths[layers]

    return model, x, folder, exported


@pytest.fixture(scope="module")
def explainer(digits):
    return Explainer(digits[3]("relu2"))


def test_cam_equals_gradcam_up_to_scale(digits, explainer):
    """For a GAP -> linear head the gradient is W[c] / (h*w) everywhere: CAM = h*w Grad-CAM."""
    assert explainer.info.cam_layer == "relu2"
    x = digits[1][:4]
    cam = explainer.explain(x, method="cam", top_k=3, normalized=True)
    grad = explainer.explain(x, method="gradcam", top_k=3, normalized=True)
    np.testing.assert_allclose(cam.raw_maps, 16 * grad.raw_maps, rtol=1e-4, atol=1e-5)
    assert np.abs(np.stack(cam.heatmaps) - np.stack(grad.heatmaps)).max() <= 1e-5


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_cams_match_pytorch_grad_cam(digits, explainer, method):
    model, x = digits[0], digits[1][:3]
    result = explainer.explain(x, method=method, targets=[-1, -2], normalized=True,
                               forward_batch_size=7)  # rows straddle images
    for i in range(len(x)):
        for k in range(2):
            expected = reference_cam(method, model, model.relu2, x[i:i + 1], int(result.classes[i, k]))
            assert np.abs(result.heatmaps[i][k] - expected).max() <= 1e-3, (i, k)


@pytest.mark.parametrize("method", ["gradcam", "layercam", "scorecam"])
def test_layers_are_fused_as_in_pytorch_grad_cam(digits, method):
    """Two layers (8x8 and 4x4): each normalized, resized to the input, averaged."""
    model, x, _, exported = digits
    result = Explainer(exported("relu1", "relu2")).explain(x[:2], method=method, normalized=True)
    for i in range(2):
        expected = reference_cam(method, model, [model.relu1, model.relu2], x[i:i + 1],
                                 int(result.classes[i, 0]))
        assert np.abs(result.heatmaps[i][0] - expected).max() <= 1e-3


def test_smoothgrad_matches_captum_saliency_on_the_same_noise(digits, explainer):
    import torch
    from captum.attr import Saliency

    model, x = digits[0], digits[1][:2]
    result = explainer.explain(x, method="smoothgrad", samples=8, noise=0.2, normalized=True)
    noise = np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32)
    for i in range(2):
        noisy = x[i] + 0.2 * (x[i].max() - x[i].min()) * noise
        grads = Saliency(model).attribute(torch.from_numpy(noisy), target=int(result.classes[i, 0]),
                                          abs=False)
        assert cosine(result.attributions[i, 0], grads.detach().numpy().mean(axis=0)) >= 0.999
    plain = explainer.explain(x, method="saliency", normalized=True)
    silent = explainer.explain(x, method="smoothgrad", samples=3, noise=0.0, normalized=True)
    np.testing.assert_allclose(silent.attributions, plain.attributions, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", list(METHODS))
def test_batch_of_4_with_3_targets_equals_12_single_runs(digits, explainer, method):
    x = digits[1][4:8]
    batch = explainer.explain(x, method=method, targets=[-1, -2, -3], normalized=True, samples=6)
    assert batch.raw_maps.shape[:2] == (4, 3)
    for i in range(4):
        for k in range(3):
            single = explainer.explain(x[i:i + 1], method=method, targets=int(batch.classes[i, k]),
                                       normalized=True, samples=6)
            assert np.abs(single.heatmaps[0][0] - batch.heatmaps[i][k]).max() <= 1e-4, (i, k)
            assert single.zero_maps[0, 0] == batch.zero_maps[i, k]
            if batch.attributions is not None:
                np.testing.assert_allclose(single.attributions[0, 0], batch.attributions[i, k],
                                           rtol=1e-4, atol=1e-6 * np.abs(batch.attributions[i, k]).max())


def test_files_without_layer_input_still_serve(tmp_path):
    """Older files (and tests/support/graphs.py's) lack ``layer_input``: only ablationcam needs it."""
    model = make_explain_graph(tmp_path / "old.onnx")
    explainer = Explainer(model.path)
    x = np.random.default_rng(0).normal(size=(2, 3, 24, 32)).astype(np.float32)
    results = {method: explainer.explain(x, method=method, normalized=True)
               for method in ("gradcam", "eigencam", "scorecam", "cam")}
    assert not any(result.zero_maps.any() for result in results.values())
    gradcam = results["gradcam"]
    np.testing.assert_allclose(gradcam.raw_maps, model.gradcam(x, gradcam.classes), rtol=1e-4, atol=1e-6)
    # a GAP -> linear head: CAM is h*w times Grad-CAM (12 x 16 maps)
    np.testing.assert_allclose(results["cam"].raw_maps, 192 * gradcam.raw_maps, rtol=1e-4, atol=1e-5)
    with pytest.raises(OnnxcamError, match="method: ablationcam needs a file with the 'layer_input'"):
        explainer.explain(x, method="ablationcam", normalized=True)


def test_extra_passes_draw_a_progress_bar_on_terminals(digits, explainer, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    explainer.explain(digits[1][:2], method="scorecam", normalized=True, forward_batch_size=16,
                      progress=True)
    assert "scorecam relu2 [" in sys.stderr.getvalue() and "] 64/64" in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", Terminal())
    explainer.explain(digits[1][:2], method="scorecam", normalized=True)
    assert sys.stderr.getvalue() == ""


# ---------------------------------------------------------------- command line figures

def _digit_png(digits, folder, index: int = 0):
    pixels = np.round((digits[1][index].transpose(1, 2, 0) * 0.5 + 0.5) * 255).astype(np.uint8)
    return write_image(folder / f"digit{index}.png", pixels)


def _grid_shape(rows: int, columns: int, image_shape=(8, 8)) -> tuple[int, int, int]:
    return (rows * (TITLE_HEIGHT + TILE_HEIGHT + GAP) + GAP,
            columns * (tile_width(image_shape) + GAP) + GAP, 3)


def test_cli_methods_grid(digits, explainer, tmp_path):
    image = _digit_png(digits, tmp_path)
    proc = run_cli("explain", explainer.path, image, "--method", "gradcam,scorecam,guided-backprop",
                   "--top-k", "2", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    record = json.loads(proc.stdout)
    assert record["methods"] == ["gradcam", "scorecam", "guided-backprop"]
    assert len(record["overlays"]) == len(record["zero_maps"]) == 6
    assert record["overlays"][0].endswith("digit0_gradcam_1.png")
    # 3 methods > 2 classes: one row per class, the photo then a tile per method
    assert load_image(tmp_path / record["grid"]).shape == _grid_shape(2, 4)
    # guided backprop is drawn as an image of the gradient, not as a heatmap overlay
    result = explainer.explain(load_image(image), method="guided-backprop", top_k=2)
    guided = load_image(tmp_path / record["overlays"][4])
    np.testing.assert_array_equal(guided, gradient_image(result.attributions[0, 0], result.geometries[0]))


def test_cli_all_classes(digits, explainer, tmp_path):
    image = _digit_png(digits, tmp_path, 3)
    proc = run_cli("explain", explainer.path, image, "--all-classes", "--method", "gradcam,cam",
                   "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["classes"] == list(range(10)) and record["labels"] == LABELS
    assert len(record["overlays"]) == 20
    assert abs(sum(record["probs"]) - 1) < 1e-4
    assert MAX_COLUMNS >= 10  # every class of a method on one line
    assert load_image(tmp_path / record["grid"]).shape == _grid_shape(2, 11)


def test_cli_all_classes_needs_a_small_model(tmp_path):
    model = make_explain_graph(tmp_path / "wide.onnx", num_classes=25)
    image = write_image(tmp_path / "i.png", np.zeros((8, 8, 3), np.uint8))
    proc = run_cli("explain", model.path, image, "--all-classes", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == ("onnxcam: error: --all-classes: the model has 25 classes; at "
                                    "most 20 fit one figure (use --top-k)")


@pytest.mark.parametrize("args,message", [
    (["--method", "gradcam,saliency"], "--method: saliency needs the 'plain_input_gradients'"),
    (["--method", "smoothgrad", "--samples", "0"], "--samples: must be at least 1, got 0"),
    (["--forward-batch-size", "0"], "--forward-batch-size: must be at least 1, got 0"),
])
def test_cli_method_errors(tmp_path, args, message):
    model = make_explain_graph(tmp_path / "m.onnx")
    image = write_image(tmp_path / "i.png", np.zeros((8, 8, 3), np.uint8))
    proc = run_cli("explain", model.path, image, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc).startswith(f"onnxcam: error: {message}")
