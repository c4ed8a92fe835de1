"""Global pooling after the repeat of the first target layer's rows runs before it: the pooled
rows are repeated and appended, with the same outputs (to the rounding of a mean), on a
synthetic graph and on a real export (checked against torch autograd and the model's own head)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxcam_export import export
from onnxcam_export.passes.onnx.pooled_repeats import pool_before_repeats
from support.graphs import all_outputs, run_model
from support.torch_models import pooled_cnn
from support.torch_reference import autograd_reference, cosine

C, H, W = 6, 5, 4

POOLS = {
    "AveragePool": lambda x, out: helper.make_node("AveragePool", [x], [out], kernel_shape=[H, W], strides=[H, W]),
    "GlobalAveragePool": lambda x, out: helper.make_node("GlobalAveragePool", [x], [out]),
    "ReduceMean": lambda x, out: helper.make_node("ReduceMean", [x, "spatial"], [out], keepdims=1),
    "ReduceMean dropping the axes": lambda x, out: helper.make_node("ReduceMean", [x, "spatial"], [out], keepdims=0),
    "GlobalMaxPool": lambda x, out: helper.make_node("GlobalMaxPool", [x], [out]),
}


def _graph(pool: str = "AveragePool") -> onnx.ModelProto:
    """Relu(x) [N, C, H, W] repeated K times along the rows (Unsqueeze, Expand to a shape made
    of run-time pieces, Reshape), ``layer_input`` appended, pooled, then a linear head."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
        helper.make_node("Shape", ["targets"], ["k"], start=1, end=2),
        helper.make_node("Concat", ["n", "k", "c", "h", "w"], ["repeat_shape"], axis=0),
        helper.make_node("Unsqueeze", ["a", "one"], ["unsqueezed"]),
        helper.make_node("Expand", ["unsqueezed", "repeat_shape"], ["expanded"]),
        helper.make_node("Reshape", ["expanded", "rows_shape"], ["rows"], allowzero=1),
        helper.make_node("Concat", ["rows", "layer_input"], ["all_rows"], axis=0),
        POOLS[pool]("all_rows", "pooled"),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["logits"]),
    ]
    constants = {"c": np.array([C], np.int64), "h": np.array([H], np.int64), "w": np.array([W], np.int64),
                 "one": np.array([1], np.int64), "rows_shape": np.array([-1, C, H, W], np.int64),
                 "spatial": np.array([2, 3], np.int64),
                 "head": np.random.default_rng(1).standard_normal((C, 3)).astype(np.float32)}
    value_info = [helper.make_tensor_value_info(name, TensorProto.INT64, [1]) for name in ("n", "k")]
    value_info += [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in [
        ("a", ["N", C, H, W]), ("unsqueezed", ["N", 1, C, H, W]), ("expanded", ["N", "K", C, H, W]),
        ("rows", ["R", C, H, W]), ("all_rows", ["S", C, H, W]),
        ("pooled", ["S", C] if pool.endswith("axes") else ["S", C, 1, 1])]]
    graph = helper.make_graph(
        nodes, "repeat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, W]),
                          helper.make_tensor_value_info("targets", TensorProto.INT64, ["N", "K"]),
                          helper.make_tensor_value_info("layer_input", TensorProto.FLOAT, ["M", C, H, W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["S", 3]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", C, H, W])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()
         if pool.startswith("ReduceMean") or name != "spatial"], value_info=value_info)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _run(model: onnx.ModelProto, rows: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((3, C, H, W)).astype(np.float32), "targets": np.zeros((3, 2), np.int64),
            "layer_input": rng.standard_normal((rows, C, H, W)).astype(np.float32)}
    return run_model(model, feed)


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_rows_are_pooled_before_they_are_repeated_and_appended(pool):
    model = _graph(pool)
    before = {rows: _run(model, rows) for rows in (0, 4)}
    assert pool_before_repeats(model) == 1
    onnx.checker.check_model(model)
    dims = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    producer = {out: node for node in model.graph.node for out in node.output}
    # the pooled rows are joined last; a Reduce that drops the pooled axes drops them after that
    joined = producer["pooled"]
    if pool.endswith("axes"):
        assert joined.op_type == "Squeeze"
        joined = producer[joined.input[0]]
    assert joined.op_type == "Concat"
    for node in model.graph.node:  # every row op reads a pooled tensor: no copy of a whole map
        if node.op_type in ("Unsqueeze", "Expand", "Reshape", "Concat") and node.input[0] in producer:
            assert producer[node.input[0]].op_type not in ("Relu",) and dims.get(node.input[0], [1, 1])[-2:] != [H, W]
    pooled = {node.input[0]: node.op_type for node in model.graph.node
              if node.op_type in (pool.split()[0], "ReduceMean", "ReduceMax")}
    # a graph input is pooled by a Reduce, which onnxruntime keeps out of its blocked layout
    assert pooled == {"a": pool.split()[0], "layer_input": "ReduceMax" if "Max" in pool else "ReduceMean"}
    for rows, expected in before.items():
        for got, want in zip(_run(model, rows), expected):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_window_smaller_than_the_map_or_pooled_rows_read_elsewhere_stay():
    model = _graph()
    pool = next(node for node in model.graph.node if node.op_type == "AveragePool")
    del pool.attribute[:]
    pool.attribute.extend([helper.make_attribute("kernel_shape", [2, 2]), helper.make_attribute("strides", [2, 2])])
    assert pool_before_repeats(model) == 0
    model = _graph()
    model.graph.output.append(helper.make_tensor_value_info("all_rows", TensorProto.FLOAT, None))
    assert pool_before_repeats(model) == 0
    model = _graph("ReduceMean")
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 2], np.int64), "channels_and_rows"))
    next(node for node in model.graph.node if node.op_type == "ReduceMean").input[1] = "channels_and_rows"
    assert pool_before_repeats(model) == 0


def test_export_pools_the_first_target_layer_before_repeating_it(tmp_path):
    model = pooled_cnn()
    path = tmp_path / "model.onnx"
    export(model, path, ["3"], input_size=(32, 32))
    graph = onnx.load(str(path)).graph
    assert not any(node.op_type == "Expand" for node in graph.node
                   if node.input[0].startswith(("unsqueeze", "activations")))  # the whole map is never repeated
    # the adaptive pooling's whole-map window runs as global pooling (passes.onnx.global_pools)
    pools = [node.op_type for node in graph.node if node.name.startswith("pooled_repeat") and "Pool" in node.op_type
             or node.op_type == "ReduceMean" and node.input[0] == "layer_input"]
    assert sorted(pools) == ["GlobalAveragePool", "ReduceMean"]
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    targets = np.array([[-1, 4], [2, -2], [0, 9]], np.int64)
    outputs = all_outputs(path, x, targets)
    logits, _, acts, grads = autograd_reference(model, "3", x, targets)
    assert cosine(outputs["logits"], logits) > 1 - 1e-6
    assert cosine(outputs["gradients/3"], grads) > 1 - 1e-6
    rows = np.random.default_rng(1).random((4, 32, 16, 16)).astype(np.float32)  # fed after the layer
    outputs = all_outputs(path, x, targets, layer_input=rows)
    with torch.no_grad():
        head = model[4:](torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(outputs["layer_logits"], head, rtol=1e-5, atol=1e-5)
