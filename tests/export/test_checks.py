"""The export's checks (`onnxcam_export.checks`): no explain-graph copies a weight at run time.
Linear layers on token tensors are one MatMul against the weight, the check rejects an Expand
of a constant, and a ViT-shaped model at 224 px explains in about the memory plain inference
takes."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxcam_export.exporter as exporter
from onnxcam.errors import OnnxcamError
from onnxcam_export import export
from onnxcam_export.checks import expanded_constants
from support.memory import PEAK_RSS
from support.paths import ROOT
from support.torch_models import plain_onnx

# peak resident memory of one plain run or one Grad-CAM explain of a [1, 3, 224, 224] input
_PEAK_RSS = PEAK_RSS + """
import sys
import numpy as np
path, mode = sys.argv[1:]
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
if mode == "plain":
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x})
else:
    from onnxcam import Explainer
    Explainer(path, providers=["CPUExecutionProvider"], threads=2).explain(x, normalized=True)
print(peak_rss() / 1e6)
"""


def _peak_rss_mb(path: Path, mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path), mode], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def _vit_small() -> nn.Module:
    """A ViT-S-shaped torchvision VisionTransformer with two blocks: 197 tokens at 224 px,
    where a weight expanded per token costs 197 copies of the attention's in-projection."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=6,
                              hidden_dim=384, mlp_dim=1536, num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision starts it at zero
    return model


def test_vit_at_224_expands_no_weight_and_explains_in_plain_memory(tmp_path):
    model = _vit_small()
    path, plain = tmp_path / "vit.onnx", tmp_path / "plain.onnx"
    export(model, path, ["encoder.layers.encoder_layer_1.ln_1"], input_size=(224, 224))
    graph = onnx.load(str(path))
    assert expanded_constants(graph) == []
    # every linear layer on tokens is one MatMul (or Gemm) against its own weight
    weights = {init.name for init in graph.graph.initializer if len(init.dims) == 2}
    products = [n for n in graph.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert sum(n.input[1] in weights for n in products) >= 2 * 4  # 4 linear layers per block
    plain_onnx(model, plain, 224)
    plain_mb, explain_mb = _peak_rss_mb(plain, "plain"), _peak_rss_mb(path, "explain")
    # with the in-projection weight expanded per token the explain run peaked at 11x plain
    assert explain_mb <= 1.5 * plain_mb, (explain_mb, plain_mb)


def _model(nodes, initializers, output_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    return helper.make_model(graph)


def test_check_names_a_weight_expanded_along_a_fixed_dimension():
    weight = np.ones((4, 8), np.float32)
    expanded = _model([helper.make_node("Transpose", ["w"], ["wt"]),
                       helper.make_node("Expand", ["wt", "shape"], ["y"], name="grow")],
                      {"w": weight, "shape": np.array([197, 8, 4])}, [197, 8, 4])
    (line,) = expanded_constants(expanded)
    assert "grow" in line and "wt [8, 4]" in line and "[197, 8, 4]" in line
    # along the batch: what every activation costs; a single value filling a shape: a full
    batch = _model([helper.make_node("Expand", ["w", "shape"], ["y"])],
                   {"w": weight[None], "shape": np.array([3, 4, 8])}, ["N", 4, 8])
    fill = _model([helper.make_node("Expand", ["one", "shape"], ["y"])],
                  {"one": np.ones((), np.float32), "shape": np.array([197, 4, 8])}, [197, 4, 8])
    activation = _model([helper.make_node("Expand", ["x", "shape"], ["y"])],
                        {"shape": np.array([197, 4, 8])}, [197, 4, 8])
    assert expanded_constants(batch) == expanded_constants(fill) == expanded_constants(activation) == []


class _Attention(nn.Module):
    """Batch-first multi-head attention between a convolutional stem and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 4, stride=4)
        self.attention = nn.MultiheadAttention(64, 2, batch_first=True)
        self.head = nn.Linear(64, 5)

    def forward(self, x):
        y = self.stem(x)
        tokens = y.flatten(2).transpose(1, 2)
        return self.head(self.attention(tokens, tokens, tokens, need_weights=False)[0].mean(1))


def test_export_rejects_an_expanded_weight(tmp_path, monkeypatch):
    """Without folding, torch traces the attention's in-projection as a batched product with
    its weight expanded per token; the export check refuses that graph with one line. (A
    weight under 8192 elements would be folded into a constant by torch.onnx's optimizer.)"""
    path = tmp_path / "mha.onnx"
    monkeypatch.setattr(exporter, "folded_matmul", contextlib.nullcontext)
    with pytest.raises(OnnxcamError, match=r"expands 1 constant.*\[64, 192\] to \[16, 64, 192\]"):
        export(_Attention(), path, ["stem"], input_size=(16, 16))
    assert not path.exists()
