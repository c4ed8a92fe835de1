"""The ONNX reader, op by op: each small graph (opset 9 to 18 attribute and input forms) run
by the torch module the reader builds must equal onnxruntime on the same file."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxcam.errors import OnnxcamError
from onnxcam_export.onnx_reader import OnnxClassifier

RNG = np.random.default_rng(0)


def const(name: str, value) -> onnx.TensorProto:
    value = np.asarray(value)
    return numpy_helper.from_array(value.astype(np.float32 if value.dtype.kind == "f" else np.int64), name)


def weights(name: str, *shape) -> onnx.TensorProto:
    return const(name, RNG.standard_normal(shape).astype(np.float32))


def model(nodes, opset: int, initializers=(), shape=("N", 3, 8, 8)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


N = helper.make_node
CASES = {
    "clip attrs (opset 9)": model([N("Clip", ["x"], ["y"], min=0.0, max=0.5)], 9),
    "clip inputs (opset 13)": model([N("Clip", ["x", "lo", "hi"], ["y"])], 13, [const("lo", 0.0), const("hi", 0.5)]),
    "clip min only": model([N("Clip", ["x", "lo"], ["y"])], 13, [const("lo", 0.1)]),
    "slice attrs (opset 9)": model([N("Slice", ["x"], ["y"], starts=[1, 2], ends=[3, 100], axes=[1, 3])], 9),
    "slice inputs, negative step": model([N("Slice", ["x", "s", "e", "a", "t"], ["y"])], 13, [
        const("s", [-1, 6]), const("e", [-100, 1]), const("a", [1, 2]), const("t", [-1, -2])]),
    "squeeze/unsqueeze attrs (opset 11)": model([N("Unsqueeze", ["x"], ["u"], axes=[2]),
                                                  N("Squeeze", ["u"], ["y"], axes=[2])], 11),
    "squeeze/unsqueeze inputs (opset 13)": model([N("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),
                                                   N("Unsqueeze", ["m", "a"], ["y"])], 13, [const("a", [2])]),
    "reducemean axes input (opset 18)": model([N("ReduceMean", ["x", "a"], ["y"], keepdims=1)], 18,
                                              [const("a", [-1, -2])]),
    "reducesum axes input (opset 13)": model([N("ReduceSum", ["x", "a"], ["y"], keepdims=0)], 13, [const("a", [3])]),
    "reshape with 0 and -1": model([N("Reshape", ["x", "s"], ["y"])], 13, [const("s", [0, 0, -1])]),
    "reshape allowzero=1 (opset 14)": model([N("Reshape", ["x", "s"], ["y"], allowzero=1)], 14, [const("s", [-1, 3, 64])]),
    "shape arithmetic to reshape": model([
        N("Shape", ["x"], ["sh"]), N("Gather", ["sh", "zero"], ["n"], axis=0),
        N("Unsqueeze", ["n", "ax"], ["n1"]), N("Concat", ["n1", "rest"], ["target"], axis=0),
        N("Reshape", ["x", "target"], ["y"])], 13, [const("zero", 0), const("ax", [0]), const("rest", [-1])]),
    "shape start/end (opset 15)": model([
        N("Shape", ["x"], ["sh"], start=0, end=2), N("Reshape", ["x", "sh2"], ["r"]),
        N("Shape", ["r"], ["s2"]), N("Cast", ["s2"], ["s3"], to=7), N("Expand", ["x", "one"], ["y"])], 15,
        [const("sh2", [0, 3, -1]), const("one", [1, 1, 1, 1])]),
    "pad attrs reflect (opset 9)": model([N("Pad", ["x"], ["y"], mode="reflect", pads=[0, 0, 1, 2, 0, 0, 2, 1])], 9),
    "pad inputs constant (opset 13)": model([N("Pad", ["x", "p", "v"], ["y"])], 13,
                                            [const("p", [0, 0, 1, 0, 0, 0, 2, 3]), const("v", 0.5)]),
    "pad edge": model([N("Pad", ["x", "p"], ["y"], mode="edge")], 13, [const("p", [0, 0, 2, 1, 0, 0, 1, 2])]),
    "softmax coerced 2-D (opset 11)": model([N("Softmax", ["x"], ["y"], axis=1)], 11),
    "softmax axis (opset 13)": model([N("Softmax", ["x"], ["y"], axis=1)], 13),
    "logsoftmax": model([N("LogSoftmax", ["x"], ["y"], axis=-1)], 13),
    "lrn odd": model([N("LRN", ["x"], ["y"], size=3, alpha=0.1, beta=0.75, bias=2.0)], 9),
    "lrn size 5 over 6 channels": model([N("Conv", ["x", "w"], ["c"]), N("LRN", ["c"], ["y"], size=5, alpha=0.1)], 13,
                      [weights("w", 6, 3, 1, 1)]),
    "hardsigmoid, hardswish": model([N("HardSigmoid", ["x"], ["h"], alpha=0.3, beta=0.4),
                                     N("HardSwish", ["h"], ["y"])], 14),
    "conv auto_pad SAME_UPPER, stride 2": model([N("Conv", ["x", "w", "b"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])],
                                                 11, [weights("w", 4, 3, 3, 3), weights("b", 4)]),
    "conv asymmetric pads, groups, dilation": model([N("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1], group=3,
                                                       dilations=[2, 1])], 13, [weights("w", 6, 1, 3, 3)]),
    "batchnorm": model([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], 9,
                       [weights("s", 3), weights("b", 3), weights("m", 3), const("v", [0.5, 1.0, 2.0])]),
    "gemm transA alpha beta": model([N("Flatten", ["x"], ["f"]), N("Transpose", ["f"], ["ft"]),
                                     N("Gemm", ["ft", "w", "c"], ["y"], transA=1, alpha=0.5, beta=2.0)], 13,
                                    [weights("w", 192, 5), weights("c", 5)]),
    "matmul + add": model([N("GlobalAveragePool", ["x"], ["g"]), N("Flatten", ["g"], ["f"]),
                           N("MatMul", ["f", "w"], ["mm"]), N("Add", ["mm", "b"], ["y"])], 9,
                          [weights("w", 3, 4), weights("b", 4)]),
    "split input (opset 13), concat": model([N("Split", ["x", "sp"], ["a", "b"], axis=1),
                                             N("Concat", ["b", "a"], ["y"], axis=1)], 13, [const("sp", [1, 2])]),
    "split num_outputs (opset 18)": model([N("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
                                           N("Sum", ["a", "b", "c"], ["y"])], 18),
    "max, min, mean, sub, div, pow": model([N("Max", ["x", "h"], ["m"]), N("Min", ["m", "x"], ["n"]),
                                            N("Mean", ["m", "n"], ["q"]), N("Sub", ["q", "h"], ["r"]),
                                            N("Div", ["r", "two"], ["d"]), N("Pow", ["d", "two"], ["y"])], 13,
                                           [const("h", 0.1), const("two", 2.0)]),
    "leaky, prelu, elu, erf, sigmoid, tanh": model([
        N("LeakyRelu", ["x"], ["a"], alpha=0.2), N("PRelu", ["a", "slope"], ["b"]), N("Elu", ["b"], ["c"]),
        N("Erf", ["c"], ["d"]), N("Sigmoid", ["d"], ["e"]), N("Tanh", ["e"], ["y"])], 13,
        [const("slope", np.array([0.1, 0.2, 0.3]).reshape(3, 1, 1))]),
    "flatten axis 2, dropout (opset 12), identity": model([N("Dropout", ["x"], ["d"]), N("Identity", ["d"], ["i"]),
                                                           N("Flatten", ["i"], ["y"], axis=2)], 12),
    "constant, constantofshape, gather": model([
        N("Constant", [], ["idx"], value=helper.make_tensor("v", TensorProto.INT64, [2], [2, 0])),
        N("Gather", ["x", "idx"], ["g"], axis=1),
        N("ConstantOfShape", ["shape"], ["k"], value=helper.make_tensor("f", TensorProto.FLOAT, [1], [0.25])),
        N("Add", ["g", "k"], ["y"])], 13, [const("shape", [1, 2, 8, 8])]),
    "global max pool, transpose": model([N("GlobalMaxPool", ["x"], ["g"]), N("Transpose", ["g"], ["y"],
                                                                             perm=[0, 2, 3, 1])], 13),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_matches_onnxruntime(name):
    proto = CASES[name]
    x = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    module = OnnxClassifier(proto, "x", "y")
    got = module(torch.from_numpy(x)).detach().numpy()
    if got.shape != expected.shape:  # the module flattens a trailing [.., 1, 1]
        got = got.reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_unsupported_op_names_op_and_node():
    proto = model([N("Relu", ["x"], ["r"]), N("TopK", ["r", "k"], ["y", "i"], name="pick_top")], 13,
                  [const("k", [2])])
    with pytest.raises(OnnxcamError, match=r"ONNX op TopK \(node 'pick_top'\): is not supported"):
        OnnxClassifier(proto, "x", "y")


def test_second_outputs_fail_only_when_read():
    """Dropout's mask (the opset-9 files list it) is fine unused, an error when read."""
    unused = model([N("Dropout", ["x"], ["y", "mask"], name="drop")], 9)
    OnnxClassifier(unused, "x", "y")
    read = model([N("Dropout", ["x"], ["d", "mask"], name="drop"), N("Cast", ["mask"], ["m"], to=1),
                  N("Mul", ["d", "m"], ["y"])], 9)
    with pytest.raises(OnnxcamError, match=r"Dropout \(node 'drop'\).*'mask'"):
        OnnxClassifier(read, "x", "y")


def test_fixed_batch_reshape_keeps_the_batch():
    """A file exported at batch 1 with Reshape [1, -1] runs at any batch: the reshape keeps the
    rows (what the explain-graph's repeated rows need)."""
    proto = model([N("GlobalAveragePool", ["x"], ["g"]), N("Reshape", ["g", "s"], ["y"])], 9,
                  [const("s", [1, -1])], shape=(1, 3, 8, 8))
    module = OnnxClassifier(proto, "x", "y", fixed_batch=1)
    x = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), x.mean(axis=(2, 3)), rtol=1e-5)


def test_taps_are_named_by_tensor():
    """Every float tensor the graph computes is a submodule of that name, dots and colons kept."""
    proto = model([N("Relu", ["x"], ["block.1/relu:0"]), N("GlobalAveragePool", ["block.1/relu:0"], ["y"])], 13)
    module = OnnxClassifier(proto, "x", "y")
    names = dict(module.named_modules())
    seen = {}
    names["block.1/relu:0"].register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    x = torch.from_numpy(RNG.standard_normal((2, 3, 8, 8)).astype(np.float32))
    y = module(x)
    assert torch.equal(seen["out"], torch.relu(x))
    assert torch.allclose(y.reshape(2, 3), torch.relu(x).mean(dim=(2, 3)))
