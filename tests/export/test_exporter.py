"""Models the exporter cannot handle fail at export time, naming what went wrong; shapes that
once broke the export now export."""
from __future__ import annotations

import sys

import pytest

torch = pytest.importorskip("torch")
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from torch import nn  # noqa: E402

from onnxcam.errors import OnnxcamError  # noqa: E402
from onnxcam_export import export  # noqa: E402


class Warped(nn.Module):
    """A CNN that resamples its features with grid_sample, whose backward ONNX cannot express."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)
        theta = torch.tensor([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]])
        self.register_buffer("theta", theta)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        grid = nn.functional.affine_grid(self.theta.expand(x.shape[0], -1, -1), list(a.shape), align_corners=False)
        warped = nn.functional.grid_sample(a, grid, align_corners=False)
        return self.head(warped.mean(dim=(2, 3)))


def test_unrollable_backward_is_named(tmp_path):
    with pytest.raises(OnnxcamError, match="grid_sampler_2d_backward"):
        export(Warped(), tmp_path / "w.onnx", ["conv"], input_size=(16, 16))
    assert not (tmp_path / "w.onnx").exists()


def test_unknown_layer_is_named(tmp_path):
    with pytest.raises(OnnxcamError, match="'conv9'.*conv"):
        export(Warped(), tmp_path / "w.onnx", ["conv9"], input_size=(16, 16))


def test_classifier_output_must_be_logits(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(OnnxcamError, match="expected \\[N, classes\\]"):
        export(model, tmp_path / "s.onnx", ["0"], input_size=(8, 8))


def test_timm_name_without_timm_names_the_extra(monkeypatch):
    from onnxcam_export import models

    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(OnnxcamError, match=r"pip install 'onnxcam\[timm\]'"):
        models.recipe("timm/resnet18")
    assert not any(name.startswith("timm/") for name in models.list_models())


@pytest.mark.parametrize("side", [11, 13, 17])
def test_layer_side_equal_to_a_trace_count_keeps_dimensions_dynamic(tmp_path, side):
    """A 13x13 target layer (squeezenet's at 224 px) once tied the traced target count K=13 to
    the layer's side: the export check failed in a Reshape. Batch, K and layer_input rows must
    all stay free."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, side)).eval()
    path = tmp_path / "square.onnx"
    export(model, path, ["2"], input_size=(side, side))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n, k, m in ((2, 1, 0), (5, 3, 2), (side, side, side)):
        x = rng.random((n, 3, side, side), np.float32)
        rows = rng.random((m, 16, side, side), np.float32)
        logits, activations, gradients, layer_logits, heat = session.run(
            ["logits", "activations/2", "gradients/2", "layer_logits", "heatmaps/gradcam"], {
            "input": x, "targets": np.zeros((n, k), np.int64), "layer_input": rows})
        assert (logits.shape, activations.shape, gradients.shape, layer_logits.shape, heat.shape) == \
            ((n, side), (n, 16, side, side), (n, k, 16, side, side), (m, side), (n, k, side, side))
        with torch.no_grad():  # and the numbers are the model's, not only the shapes
            np.testing.assert_allclose(logits, model(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(activations, model[:3](torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(layer_logits, model[3:](torch.from_numpy(rows)).numpy(), rtol=1e-4, atol=1e-5)
