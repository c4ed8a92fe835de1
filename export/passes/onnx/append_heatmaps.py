"""The final heatmap of each in-graph map, appended to the translated graph: the raw map resized
to the input and min-max normalized there, as onnxcam.methods.maps.heatmaps does on the host, so a
session of a small model returns what ``explain`` gives with no host work after the run.

Written in ONNX directly, where MatMul broadcasts a [H, h] matrix over [N, K, h, w] maps: the
same steps traced from torch fold every product into reshapes of dynamic shapes, and on a small
model each of their many nodes costs as much as its work. Here the shift and scale are applied
before the last resize product (which keeps them: each output column's weights sum to 1), so the
only full-size work is that product and a clip, and the extremes are taken over the few output
columns where they can lie.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxcam.methods.maps import RTOL32, TINY32
from onnxcam.runtime import artifact
from onnxcam.runtime.artifact import ArtifactInfo


def _bilinear(size_out: int, size_in: int) -> list[tuple[int, int, float]]:
    """For each output position: the two input positions it mixes and the second one's weight,
    with half-pixel centres, clamped at the borders (cv2.INTER_LINEAR's rule)."""
    mixes = []
    for position in range(size_out):
        src = max((position + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(math.floor(src), size_in - 1)
        mixes.append((low, min(low + 1, size_in - 1), src - low))
    return mixes


def interpolation_matrix(size_out: int, size_in: int) -> np.ndarray:
    """float32 [size_out, size_in] bilinear weights (see ``_bilinear``), computed in float64."""
    matrix = np.zeros((size_out, size_in))
    for row, (low, high, frac) in enumerate(_bilinear(size_out, size_in)):
        matrix[row, low] += 1 - frac
        matrix[row, high] += frac
    return matrix.astype(np.float32)


def extreme_positions(size_out: int, size_in: int) -> list[int]:
    """The output positions of a bilinear resize where the extremes of every line lie: a
    position mixes one input pair linearly in its weight, so over the positions mixing a pair
    the extremes are at its smallest and largest weight (about 2 * size_in positions in all)."""
    pairs: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for position, (low, high, frac) in enumerate(_bilinear(size_out, size_in)):
        pairs.setdefault((low, high), []).append((frac, position))
    return sorted({position for members in pairs.values() for _, position in (min(members), max(members))})


def add_heatmaps(model: onnx.ModelProto, info: ArtifactInfo) -> None:
    """Append ``heatmaps/<m>`` [N, K, H, W] and ``zero_maps/<m>`` [N, K] for each method of
    ``info.maps``, computed from its ``maps/<m>`` output, in place."""
    graph = model.graph
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    outputs = {value.name: value for value in graph.output}
    for index, method in enumerate(info.maps):
        raw = outputs[artifact.map_name(method)]
        _add_one(graph, raw, method, tuple(info.input_size), f"heatmap_{index}_", opset)


def _add_one(graph: onnx.GraphProto, raw: onnx.ValueInfoProto, method: str, size: tuple[int, int],
             prefix: str, opset: int) -> None:
    """The nodes and outputs of one method's heatmap."""
    tensor = raw.type.tensor_type
    batch, targets, h, w = (dim.dim_param or dim.dim_value for dim in tensor.shape.dim)
    float16 = tensor.elem_type == TensorProto.FLOAT16
    height, width = size
    nodes: list[onnx.NodeProto] = []
    constants = {"axes": np.array([2, 3], np.int64), "zero": np.array(0.0, np.float32),
                 "one": np.array(1.0, np.float32), "eps": np.array(RTOL32, np.float32),
                 "tiny": np.array(TINY32, np.float32)}

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def reduce(op: str, x: str, output: str) -> str:  # axes became an input (ReduceSum: opset 13)
        if opset >= (13 if op == "ReduceSum" else 18):
            return node(op, [x, prefix + "axes"], prefix + output, keepdims=1)
        return node(op, [x], prefix + output, axes=[2, 3], keepdims=1)

    values = node("Cast", [raw.name], prefix + "float", to=TensorProto.FLOAT) if float16 else raw.name
    # NaN or infinity anywhere makes the sum of the map times zero NaN: such a map is all zero
    nothing = node("Mul", [values, prefix + "zero"], prefix + "times_zero")
    bad = node("IsNaN", [reduce("ReduceSum", nothing, "sum")], prefix + "not_finite")
    clean = node("Where", [bad, prefix + "zero", values], prefix + "clean")
    if (h, w) == (height, width):
        spread, lines = clean, clean
    else:
        constants["rows"] = interpolation_matrix(height, h)
        columns = interpolation_matrix(width, w).T
        constants["columns"] = columns
        constants["extreme_columns"] = np.ascontiguousarray(columns[:, extreme_positions(width, w)])
        spread = node("MatMul", [prefix + "rows", clean], prefix + "tall")  # [N, K, H, w]
        lines = node("MatMul", [spread, prefix + "extreme_columns"], prefix + "extremes")
    low = reduce("ReduceMin", lines, "low")
    high = reduce("ReduceMax", lines, "high")
    span = node("Sub", [high, low], prefix + "span")
    # every in-graph map is a ReLU's output (or an average of normalized ones): |low| <= high
    tolerance = node("Max", [node("Mul", [high, prefix + "eps"], prefix + "rounding"), prefix + "tiny"],
                     prefix + "tolerance")  # a span below the least normal float has no reciprocal
    constant = node("LessOrEqual", [span, tolerance], prefix + "constant")
    scale = node("Where", [constant, prefix + "zero", node("Reciprocal", [span], prefix + "inverse")],
                 prefix + "scale")
    scaled = node("Mul", [node("Sub", [spread, low], prefix + "shifted"), scale], prefix + "scaled")
    if "columns" in constants:
        scaled = node("MatMul", [scaled, prefix + "columns"], prefix + "resized")
    heat = artifact.heatmap_name(method)
    clipped = node("Clip", [scaled, prefix + "zero", prefix + "one"], prefix + "clipped" if float16 else heat)
    if float16:
        node("Cast", [clipped], heat, to=TensorProto.FLOAT16)
    node("Squeeze", [constant, prefix + "axes"], artifact.zero_map_name(method))
    graph.initializer.extend(numpy_helper.from_array(value, prefix + name) for name, value in constants.items())
    graph.node.extend(nodes)
    graph.output.extend([
        helper.make_tensor_value_info(heat, tensor.elem_type, [batch, targets, height, width]),
        helper.make_tensor_value_info(artifact.zero_map_name(method), TensorProto.BOOL, [batch, targets]),
    ])
