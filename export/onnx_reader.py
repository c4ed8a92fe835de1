"""Read a plain ONNX classifier into a torch module, op by op, so the exporter can trace its
backward.

Every node becomes a call of the torch function that computes the same thing. Nodes whose
inputs are all constant (initializers, ``Constant``, ``ConstantOfShape`` weights of the
architecture-only test models, shape arithmetic on constants) are folded once when the module
is built. Small integer tensors (shapes, axes, indices) stay Python integers (:class:`Ints`),
so ``Shape -> Gather -> Concat -> Reshape`` chains keep the batch dimension symbolic while the
exporter traces. Each float tensor the graph computes is the output of an identity submodule
named exactly as the tensor (``relu_16``, ``Relu_48:0``), so the exporter's forward hooks
address target layers by their ONNX tensor names.

An INT8 file's ``QuantizeLinear -> DequantizeLinear`` pairs become one
:data:`~onnxcam_export.quantization.fake_quantize` each and a ``DequantizeLinear`` of integer
weights one :data:`~onnxcam_export.quantization.dequantize` (never folded: onnxruntime's integer
kernels read the integers); their scales must be constant, finite and nonzero. Dynamic
quantization (:data:`REFUSED`) is refused naming the op and what to do instead.

The ops themselves live in :mod:`onnxcam_export.onnx_ops`. An op outside its ``OPS`` raises
:class:`OnnxcamError` naming the op and the node while the module is built; an attribute
form the reader does not implement raises the same kind of error at the first forward pass
(which the exporter makes before anything is written).
"""
from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

import torch
from torch import nn

from onnxcam.errors import OnnxcamError
from onnxcam.images.plain_input import luma
from onnxcam_export.onnx_ops import (
    GRID_OPS,
    NOT_FOLDED,
    OPS,
    REFUSED,
    Ints,
    Node,
    Value,
    as_tensor,
    dequantize_linear,
    from_proto,
    quantize_linear,
    reshape,
    slice_,
    to_ints,
)
from onnxcam_export.quantization import INTEGER_RANGES

CONSTANTS = "_onnx_constants"  # the submodule holding folded float constants as buffers
LINEARS = "_onnx_linear"  # prefix of the nn.Linear submodules made from Gemm nodes


def _dequantize_head(nodes: list[Node], constants: dict[str, Value], logits: str) -> list[Node]:
    """The nodes less the ``DequantizeLinear`` of the weight and bias of the classifier ``Gemm``
    (the one the logits come from, through pairs and reshapes), whose float values join
    ``constants``: the head then reads float weights, so the reader makes it an ``nn.Linear``
    (CAM finds it, the exporter's head shortcut applies). onnxruntime would run it in float
    anyway, as the clipping mask of the logits' pair reads its output."""
    producer = {name: node for node in nodes for name in node.outputs}
    node = producer.get(logits)
    while node is not None and node.op in ("QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten",
                                           "Squeeze", "Identity") and node.inputs[0] not in constants:
        node = producer.get(node.inputs[0])
    if node is None or node.op != "Gemm":
        return nodes
    readers = Counter(name for n in nodes for name in n.inputs)
    folded = []
    for name in node.inputs[1:3]:
        source = producer.get(name)
        if source is not None and source.op == "DequantizeLinear" and readers[name] == 1 \
                and all(i in constants for i in source.inputs if i):
            constants[name] = dequantize_linear(source, *(constants[i] if i else None for i in source.inputs))
            folded.append(source)
    return [n for n in nodes if all(n is not f for f in folded)]


def _check_scale(node: Node, scale: Optional[Value]) -> None:
    """A Q/DQ node's scale: a constant, finite and nonzero."""
    if scale is None:
        raise node.fail("its scale is computed while the graph runs; only constant scales are supported")
    values = as_tensor(scale).to(torch.float64)
    if not bool(torch.isfinite(values).all()) or bool((values == 0).any()):
        raise node.fail(f"its scale {node.inputs[1]!r} holds zero or non-finite values; the file is not a "
                        "valid quantized model")


def _check_pairs(nodes: list[Node], constants: dict[str, Value]) -> None:
    """Every computed QuantizeLinear is read by DequantizeLinear nodes alone, with its own
    scale, zero point and axis."""
    quantized = {node.outputs[0]: node for node in nodes if node.op == "QuantizeLinear"}

    def parameters(node: Node) -> list:
        values = [as_tensor(constants[name]) if name in constants else None for name in node.inputs[1:3]]
        return [*(v.to(torch.float64).reshape(-1).tolist() if v is not None else [0] for v in values),
                node.get("axis", 1) if values[0].numel() > 1 else None]

    for node in nodes:
        source = next((quantized[name] for name in node.inputs if name in quantized), None)
        if source is None:
            continue
        if node.op != "DequantizeLinear":
            raise node.fail(f"reads the integers of QuantizeLinear node {source.name!r}; only "
                            "DequantizeLinear may (ops on integer tensors are not supported)")
        if parameters(node) != parameters(source):
            raise node.fail(f"dequantizes with another scale or zero point than QuantizeLinear node "
                            f"{source.name!r} (requantization is not supported)")


def needed_tensors(nodes: list, output: str) -> set[str]:
    """Names of the tensors ``output`` depends on (``nodes``: with ``inputs`` and ``outputs``)."""
    producer = {name: node for node in nodes for name in node.outputs}
    needed, stack = set(), [output]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(i for i in node.inputs if i)
    return needed


_RECTIFIERS = ("Relu", "Clip", "LeakyRelu", "Softplus", "Sigmoid", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu")
# what makes heads of a projection: walked back through from q, k, v (as are a scale and a bias)
_HEAD_SPLITS = ("Reshape", "Transpose", "Split", "Gather", "Slice", "Squeeze", "Unsqueeze", "Identity")
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Where", "Dropout", "Identity", "Cast", "Transpose")


class _Tap(nn.Identity):
    """The identity a graph tensor passes through, so forward hooks can read or replace it."""


class OnnxClassifier(nn.Module):
    """A plain ONNX classifier as a torch module.

    ``forward`` takes an NCHW batch in ``channels`` order ("RGB" or "BGR" as the explain-graph's
    input is always RGB) and returns the tensor ``logits`` of the file ([N, C]; an [N, C, 1, 1]
    or [N, 1, C] output is flattened). ``input_layout`` "NHWC" transposes the batch before the graph, and
    ``channels`` "BGR" reverses the channels: the file sees exactly what it expects.
    ``fixed_batch``: the file's batch size when it is fixed; a ``Reshape`` to a constant shape
    that starts with it keeps the batch of its input instead. ``gray``: the file takes one
    channel, the luma of the RGB batch (:func:`onnxcam.images.plain_input.luma`).
    """

    def __init__(self, model, input_name: str, logits: str, input_layout: str = "NCHW",
                 channels: str = "RGB", fixed_batch: Optional[int] = None, gray: bool = False):
        super().__init__()
        self.input_name, self.logits, self.gray = input_name, logits, gray
        self.input_layout, self.channels, self.fixed_batch = input_layout, channels, fixed_batch
        self._batched: set[str] = set()  # filled below; empty while constants are folded
        self._settled: dict[str, Value] = {}  # see settle_shape_values
        self._record: Optional[dict[str, Ints]] = None
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        foreign = [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
        if foreign:
            ops = sorted({f"{n.domain}::{n.op_type}" for n in foreign})
            raise OnnxcamError(f"ONNX op {foreign[0].domain}::{foreign[0].op_type} (node "
                               f"{foreign[0].name or foreign[0].output[0]!r}) is outside the default domain "
                               f"and not supported (the file has: {', '.join(ops)})")
        constants: dict[str, Value] = {t.name: from_proto(t) for t in model.graph.initializer}
        nodes = [Node(proto, opset) for proto in model.graph.node]
        needed = needed_tensors(nodes, logits)
        self.nodes: list[Node] = []
        known = {input_name}
        for node in nodes:
            if not needed.intersection(node.outputs):
                continue
            if node.op in REFUSED:
                raise node.fail(REFUSED[node.op])
            if node.op not in OPS:
                raise node.fail("is not supported by onnxcam's ONNX reader")
            if any(name in needed for name in node.outputs[1:] if name) and node.op != "Split":
                raise node.fail(f"its output {node.outputs[1]!r} (past the first) is not supported")
            present = [name for name in node.inputs if name]
            missing = [name for name in present if name not in constants and name not in known]
            if missing:
                raise node.fail(f"reads {missing[0]!r}, which is neither the image input, a constant "
                                "nor computed by the graph")
            known.update(node.outputs)
            if node.op in ("QuantizeLinear", "DequantizeLinear"):
                _check_scale(node, constants.get(node.inputs[1]))
            if node.op == "QuantizeLinear":  # whether the zero point is the least integer (see Quantized)
                zero = constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
                node.attrs["_floor"] = zero is None or bool((as_tensor(zero) == INTEGER_RANGES.get(
                    as_tensor(zero).dtype, (None,))[0]).all())
            if all(name in constants for name in present) and node.op not in NOT_FOLDED:
                outputs = self._call(node, [constants.get(name) if name else None for name in node.inputs],
                                     folding=True)
                constants.update({name: to_ints(v) if isinstance(v, torch.Tensor) else v
                                  for name, v in zip(node.outputs, outputs)})
            else:
                self.nodes.append(node)
        self.nodes = _dequantize_head(self.nodes, constants, logits)
        _check_pairs(self.nodes, constants)
        self._constants = {}
        holder = nn.Module()
        for i, (name, value) in enumerate(constants.items()):
            if isinstance(value, torch.Tensor) and value.numel() > 1 and (
                    value.is_floating_point() or value.dtype in INTEGER_RANGES):
                holder.register_buffer(f"c{i}", value.contiguous())
                self._constants[name] = f"c{i}"
            else:
                self._constants[name] = value
        self._modules[CONSTANTS] = holder
        self._linears = {}  # Gemm nodes with constant weights, as nn.Linear (CAM finds the head)
        for node in self.nodes:
            linear = self._linear(node)
            if linear is not None:
                self._linears[id(node)] = f"{LINEARS}{len(self._linears)}"
                self._modules[self._linears[id(node)]] = linear
        dynamic = {input_name}  # the tensors computed from the image (not the dequantized weights)
        self._batched = {input_name}  # of those, the ones that carry its batch (not shape arithmetic)
        for node in self.nodes:
            if dynamic.intersection(node.inputs):
                dynamic.update(name for name in node.outputs if name)
            if node.op != "Shape" and self._batched.intersection(node.inputs):
                self._batched.update(name for name in node.outputs if name)
        for name in sorted(dynamic - {input_name}):
            if name == CONSTANTS:
                raise OnnxcamError(f"ONNX tensor name {name!r} is reserved by onnxcam")
            self._modules[name] = _Tap()  # tensor names may hold dots: no add_module
        self._taps = dynamic - {input_name}

    def taps(self) -> list[str]:
        """The computed float tensors a hook can read (target-layer candidates), in graph order."""
        return [name for node in self.nodes for name in node.outputs if name in self._taps]

    def attention_tensors(self) -> set[str]:
        """Tensors on an attention path, never feature maps whatever their shape: softmax outputs,
        products of two computed tensors (query times key, weights times values) and what
        element-wise ops and transposes make of them; and the operands of those products (queries,
        keys, values) back through the reshapes, transposes, splits, scales and biases that made
        heads of them, to the projection they came from."""
        producer = {out: node for node in self.nodes for out in node.outputs}
        marked: set[str] = set()
        for node in self.nodes:
            computed = [name for name in node.inputs if name in self._taps or name == self.input_name]
            product = node.op in ("MatMul", "Einsum") and len(computed) == 2
            if node.op == "Softmax" or product or (node.op in _ELEMENTWISE and marked.intersection(node.inputs)):
                marked.update(node.outputs)
            for name in computed if product else ():
                while name in self._taps and name not in marked:
                    marked.add(name)
                    source = producer[name]
                    before = [i for i in source.inputs if i in self._taps or i == self.input_name]
                    if source.op in _HEAD_SPLITS:  # the data input (shapes and indices may be computed too)
                        name = source.inputs[0]
                    elif source.op in ("Mul", "Div", "Add") and len(before) == 1:  # a scale or a bias
                        name = before[0]
                    else:
                        break
        return marked

    def rectified_source(self, name: str) -> Optional[str]:
        """The rectifier output (ReLU, Clip, ...) that ``name`` is computed from by per-channel
        affine ops with constant operands alone (a batch norm or scale placed after the last
        ReLU); None when ``name`` is not such a tensor."""
        producer = {out: node for node in self.nodes for out in node.outputs}
        node = producer.get(name)
        moved = False
        while node is not None:
            computed = [i for i in node.inputs if i in self._taps or i == self.input_name]
            # x * c, c * x, x + c, c + x, x - c, x / c, BatchNormalization(x), Identity(x)
            operand = len(computed) == 1 and (node.op in ("Mul", "Add") or node.inputs[0] == computed[0])
            if not (node.op in ("BatchNormalization", "Identity") or node.op in ("Mul", "Add", "Sub", "Div")
                    and operand):
                return name if moved and node.op in _RECTIFIERS else None
            name, node, moved = computed[0], producer.get(computed[0]), True
        return None

    def quantization(self) -> Optional[dict]:
        """How the file is quantized (None for a float file): the integer types of its
        activations and weights, and whether the weights have per-channel scales."""
        pairs = [node for node in self.nodes if node.op == "QuantizeLinear"]
        weights = [node for node in self.nodes if node.op == "DequantizeLinear"
                   and node.inputs[0] in self._constants]
        if not pairs and not weights:
            return None

        def types(nodes: list[Node], position: int) -> list[str]:
            found = {str(as_tensor(self._constant(node.inputs[position])).dtype).replace("torch.", "")
                     for node in nodes if len(node.inputs) > position and node.inputs[position]}
            return sorted(found) or ["uint8"]

        weights = [node for node in weights if not isinstance(self._constant(node.inputs[0]), Ints)
                   and self._constant(node.inputs[0]).dtype != torch.int32]  # not the biases
        return {"activations": types(pairs, 2), "weights": types(weights, 0) if weights else [],
                "per_channel": any(as_tensor(self._constant(node.inputs[1])).numel() > 1 for node in weights)}

    def _linear(self, node: Node) -> Optional[nn.Linear]:
        """An nn.Linear computing a Gemm node whose weight (and bias) are constant."""
        if node.op != "Gemm" or node.get("transA", 0) or len(node.inputs) < 2:
            return None
        weight = self._constants.get(node.inputs[1])
        bias = self._constants.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if not isinstance(weight, str) or (bias is not None and not isinstance(bias, str)):
            return None
        holder = self._modules[CONSTANTS]
        weight = getattr(holder, weight)
        weight = weight if node.get("transB", 0) else weight.t()
        bias = None if bias is None else getattr(holder, bias)
        if bias is not None and bias.dim() != 1:
            return None
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight * float(node.get("alpha", 1.0)))
            if bias is not None:
                linear.bias.copy_(bias * float(node.get("beta", 1.0)))
        return linear.requires_grad_(False)

    def _call(self, node: Node, args: list, folding: bool = False) -> list:
        while args and args[-1] is None:
            args.pop()
        if node.op not in GRID_OPS:
            args = [as_tensor(a) if isinstance(a, Ints) and a.shape else a for a in args]
        try:
            if node.op == "Reshape":
                out = reshape(node, *args, fixed_batch=None if folding else self.fixed_batch)
            elif node.op == "Slice":
                out = slice_(node, *args, batched=node.inputs[0] in self._batched)
            elif node.op == "QuantizeLinear":
                out = quantize_linear(node, *args, constant=folding)
            else:
                out = OPS[node.op](node, *args)
        except OnnxcamError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if folding:
                raise node.fail(first) from exc
            # not an OnnxcamError while running: the exporter then retries with the input
            # repeated (a target tensor inside a branch that a Concat joins), and names this
            # op and node if that fails too
            raise RuntimeError(f"ONNX op {node.op} (node {node.name!r}): {first}") from exc
        return out if isinstance(out, list) else [out]

    def _constant(self, name: str) -> Value:
        value = self._constants[name]
        return getattr(self._modules[CONSTANTS], value) if isinstance(value, str) else value

    def settle_shape_values(self, size: Sequence[int]) -> None:
        """Integer tensors worked out from the input's shape alone (TF-style "same" pads computed
        in float, then cast back) become constants, since a traced tensor has no values to pad
        by: two eager passes at two batch sizes keep those that come out the same in both. A
        graph that fails here is left as it is (the exporter names what fails)."""
        if all(name in self._batched for node in self.nodes for name in node.outputs):
            return
        runs = []
        try:
            for batch in (self.fixed_batch,) if self.fixed_batch else (1, 2):
                self._record = {}
                with torch.no_grad():
                    self(torch.zeros(batch, 3, *size))
                runs.append(self._record)
        except Exception:  # whatever the graph raises: the export reports it
            return
        finally:
            self._record = None
        first, *rest = runs
        self._settled = {name: value for name, value in first.items()
                         if all(run.get(name) == value for run in rest)}

    def _keep(self, node: Node, value: Value) -> None:
        """While settling: a small integer tensor (one ``to_ints`` makes Ints) that does not
        carry the batch, for settle_shape_values."""
        name = node.outputs[0]
        if (self._record is not None and len(node.outputs) == 1 and name not in self._batched
                and isinstance(value, torch.Tensor)):
            small = to_ints(value)
            if isinstance(small, Ints):
                self._record[name] = small

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gray:
            x = luma(x)
        elif self.channels == "BGR":
            x = x.flip(1)
        if self.input_layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        env: dict[str, Value] = {self.input_name: x}
        for node in self.nodes:
            linear = self._linears.get(id(node))
            if node.outputs[0] in self._settled:
                outputs = [self._settled[node.outputs[0]]]
            elif linear is not None:
                outputs = [self._modules[linear](env[node.inputs[0]])]
            else:
                args = [None if not name else env[name] if name in env else self._constant(name)
                        for name in node.inputs]
                outputs = self._call(node, args)
                self._keep(node, outputs[0])
            for name, value in zip(node.outputs, outputs):
                if name in self._taps and isinstance(value, torch.Tensor) and value.is_floating_point():
                    value = self._modules[name](value)
                env[name] = value
        out = env[self.logits] if self.logits in env else as_tensor(self._constant(self.logits))
        if out.dim() > 2 and sum(int(s) > 1 for s in out.shape[1:]) <= 1:  # [N, C, 1, 1], [N, 1, C]
            out = out.reshape(out.shape[0], -1)
        return out
