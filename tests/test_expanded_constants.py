"""No explain-graph copies a weight at run time: linear layers on token tensors are one MatMul
against the weight, the export check rejects an Expand of a constant, a ViT-shaped model
at 224 px explains in about the memory plain inference takes, and a linear layer's backward
reads the forward's weight rather than a transposed copy."""
from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import onnxcam_export.exporter as exporter
from benchmarks.bench import _export_plain
from onnxcam.errors import OnnxcamError
from onnxcam_export import export
from onnxcam_export.expands import expanded_constants
from onnxcam_export.weight_views import read_weights_in_place

ROOT = Path(__file__).resolve().parents[1]
# peak resident memory of one plain run or one Grad-CAM explain of a [1, 3, 224, 224] input
_PEAK_RSS = """
import sys
import numpy as np
from benchmarks.bench import _peak_rss_mb
path, mode = sys.argv[1:]
x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
if mode == "plain":
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x})
else:
    from onnxcam import Explainer
    Explainer(path, providers=["CPUExecutionProvider"], threads=2).explain(x, normalized=True)
print(_peak_rss_mb())
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
    _export_plain(model, torch.randn(2, 3, 224, 224), plain)
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


def _products(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """y = x @ a^T (MatMul of a matrix), z = Gemm(x, b^T) [transB 0], u = x @ (c^T)^T,
    v = tokens @ a^T (MatMul of a [N, T, C] tensor, which Gemm cannot take)."""
    nodes = [helper.make_node("Transpose", ["a"], ["a_t"]),
             helper.make_node("MatMul", ["x", "a_t"], ["y"]),
             helper.make_node("Transpose", ["b"], ["b_t"], perm=[1, 0]),
             helper.make_node("Gemm", ["x", "b_t"], ["z"]),
             helper.make_node("Transpose", ["c"], ["c_t"]),
             helper.make_node("Transpose", ["c_t"], ["c_tt"]),
             helper.make_node("MatMul", ["x", "c_tt"], ["u"]),
             helper.make_node("MatMul", ["tokens", "a_t"], ["v"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                     helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", 3, 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in "yzuv"],
        [numpy_helper.from_array(value, name) for name, value in weights.items()])
    return helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])


def test_products_read_each_weight_itself_not_a_transposed_copy():
    rng = np.random.default_rng(0)
    model = _products({"a": rng.standard_normal((5, 8), np.float32), "b": rng.standard_normal((6, 8), np.float32),
                       "c": rng.standard_normal((8, 4), np.float32)})
    feeds = {"x": rng.standard_normal((2, 8), np.float32), "tokens": rng.standard_normal((2, 3, 8), np.float32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert read_weights_in_place(model) == 3
    nodes = {node.output[0]: node for node in model.graph.node}
    assert nodes["y"].op_type == "Gemm" and list(nodes["y"].input) == ["x", "a"]
    assert nodes["z"].op_type == "Gemm" and list(nodes["z"].input) == ["x", "b"]
    assert helper.get_node_attr_value(nodes["y"], "transB") == helper.get_node_attr_value(nodes["z"], "transB") == 1
    assert nodes["u"].op_type == "MatMul" and list(nodes["u"].input) == ["x", "c"]
    # the token product keeps its transpose; the others are gone
    assert [n.input[0] for n in model.graph.node if n.op_type == "Transpose"] == ["a"]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for got, expected in zip(after, before):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_fully_connected_head_holds_its_weights_once_in_onnxruntime(tmp_path):
    """The backward of a linear layer reads the forward's weight: onnxruntime's optimized
    graph (constants folded) holds no more matrix bytes than the model's own weights. (torch.onnx
    folds a weight under 8192 elements into constants of both orientations in the file.)"""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                          nn.Linear(128, 100)).eval()
    path, optimized = tmp_path / "mlp.onnx", tmp_path / "optimized.onnx"
    export(model, path, ["1"], input_size=(16, 16))
    graph = onnx.load(str(path)).graph
    matrices = {init.name for init in graph.initializer if len(init.dims) == 2}
    assert not [n.name for n in graph.node if n.op_type == "Transpose" and n.input[0] in matrices]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    held = sum(numpy_helper.to_array(init).nbytes for init in onnx.load(str(optimized)).graph.initializer
               if len(init.dims) == 2 and not init.name.startswith("heatmap_"))
    own = sum(layer.weight.numel() * 4 for layer in model if isinstance(layer, nn.Linear))
    assert held <= own, (held, own)
