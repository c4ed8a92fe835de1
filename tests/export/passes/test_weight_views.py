"""A linear layer's backward reads the forward's weight rather than a transposed copy
(`onnxcam_export.passes.onnx.weight_views`): products take each weight itself, and
onnxruntime's optimized graph holds the head's weights once."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from onnxcam_export import export
from onnxcam_export.passes.onnx.weight_views import read_weights_in_place
from support.graphs import run_model


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
    before = run_model(model, feeds)
    assert read_weights_in_place(model) == 3
    nodes = {node.output[0]: node for node in model.graph.node}
    assert nodes["y"].op_type == "Gemm" and list(nodes["y"].input) == ["x", "a"]
    assert nodes["z"].op_type == "Gemm" and list(nodes["z"].input) == ["x", "b"]
    assert helper.get_node_attr_value(nodes["y"], "transB") == helper.get_node_attr_value(nodes["z"], "transB") == 1
    assert nodes["u"].op_type == "MatMul" and list(nodes["u"].input) == ["x", "c"]
    # the token product keeps its transpose; the others are gone
    assert [n.input[0] for n in model.graph.node if n.op_type == "Transpose"] == ["a"]
    after = run_model(model, feeds)
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
