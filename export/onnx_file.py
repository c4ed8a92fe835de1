"""Export a plain ONNX classifier file as an explain-graph.

The file is read into a torch module (:mod:`onnxcam_export.onnx_reader`) and handed to the
exporter, whose own check compares the graph with that module in eager torch. Then the written
graph is checked against the original file run by onnxruntime: the logits, each target layer's
activations, and each target layer's gradient against central finite differences of the file's
score along a few directions (the file with the layer's tensor shifted by ``t * v``).

The explain-graph's ``input`` is the v1 contract's [N, 3, H, W] in RGB order: the module
transposes it to NHWC and reverses the channels where the file wants that, and the metadata's
mean and std are stored in RGB order. The pixel scale (``scale``) stays the file's own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from onnxcam.errors import OnnxcamError, first_line
from onnxcam.images.plain_input import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PlainInput,
    describe_input,
    luma,
)
from onnxcam.runtime import artifact
from onnxcam.runtime.artifact import ArtifactInfo
from onnxcam_export.checks import check_fusion
from onnxcam_export.exporter import QUANTIZED_VALUES, agrees
from onnxcam_export.layer_layouts import detect_layout, from_spatial, to_spatial
from onnxcam_export.onnx_reader import OnnxClassifier
from onnxcam_export.qoperator import is_qoperator, to_qdq

# a final op of these is recognized and looked through: the logits are its input
_CLASS_OPS = {"Softmax": "softmax", "LogSoftmax": "softmax", "Sigmoid": "sigmoid"}
_SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Identity")
# finite differences against the graph's gradient g, as |difference - g . v| / |g| for unit v:
RELATIVE_ERROR = 1e-3  # along random directions
SCALE_ERROR = 1e-2  # along g itself, where a step crosses the most ReLU kinks downstream
LOGITS_ERROR = 1e-4  # relative L2 of the graph's logits against the file's
# finite-difference steps, relative to the layer's norm; the best counts (the larger steps
# win where float32 rounding of large scores dominates, the smaller where ReLU kinks do)
FD_STEPS = (1e-2, 1e-3, 1e-4)
SCORE_STEP = 1e-2  # and a step of SCORE_STEP / |g|: the score moves by about that much


@dataclass
class OnnxSource:
    """A plain classifier file as onnxcam reads it."""

    path: Path
    model: object  # onnx.ModelProto
    image: PlainInput
    output: str  # the file output read
    logits: str  # the tensor taken as logits: the output, or the input of its final softmax or sigmoid
    probabilities: Optional[str]  # the output is a (log-)"softmax" or a "sigmoid" of ``logits``; else None
    form: Optional[str] = None  # of an INT8 file: "qdq", or "qoperator" (``model`` is then its QDQ rewrite)
    pixels: Optional[int] = None  # the file takes raw pixels (uint8, or normalizes them itself): their scale
    uint8: bool = False  # the file's input is uint8 (``model``'s is float: the same numbers, differentiable)
    float16: bool = False  # a float16 file, ``model`` its float32 reading (weights upcast exactly)


def read_source(path: str | Path, output: Optional[str] = None, layout: Optional[str] = None,
                input_size: Optional[Sequence[int]] = None) -> OnnxSource:
    """Load ``path`` and find its image input, its output and the logits behind it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxcamError(f"{path}: no such file")
    model = _load(path)
    if any(p.key == artifact.METADATA_KEY for p in model.metadata_props):
        raise OnnxcamError(f"{path} is already an onnxcam explain-graph")
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise OnnxcamError(f"{path}: has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                           "expected one image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    image = describe_input(dims, inputs[0].name, path, layout, input_size)
    output = _class_output(model, path, output)
    float16 = _upcast_float16(model)
    form = None
    if is_qoperator(model):
        model, form = to_qdq(model), "qoperator"
    elif any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        form = "qdq"
    logits, probabilities = _logits_behind(model, output)
    uint8 = inputs[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    if uint8:  # its first op casts to float: fed float pixels, the graph is the same and differentiable
        inputs[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    pixels = 255 if uint8 else _normalizing_scale(model, image.name)
    return OnnxSource(path, model, image, output, logits, probabilities, form, pixels, uint8, float16)


def _upcast_float16(model) -> bool:
    """Rewrite a float16 file (onnxconverter-common's, with or without float32 inputs and
    outputs) in place as the same graph in float32: its weights upcast exactly, its casts to
    float16 made casts to float32. Whether it was one."""
    from onnx import AttributeProto, TensorProto, numpy_helper

    half, full = TensorProto.FLOAT16, TensorProto.FLOAT

    def upcast(tensor) -> bool:
        if tensor.data_type != half:
            return False
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
        return True

    changed = sum(upcast(t) for t in model.graph.initializer)
    for node in model.graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.TENSOR:
                changed += upcast(attribute.t)
            elif node.op_type == "Cast" and attribute.name == "to" and attribute.i == half:
                attribute.i, changed = full, changed + 1
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type, changed = full, changed + 1
    return bool(changed)



def _normalizing_scale(model, name: str) -> Optional[int]:
    """Where the graph normalizes its input itself (its first op past casts and transposes is a
    Sub, Add, Mul or Div by a constant): the pixel scale that constant implies (255 for
    x - 127.5, x / 255, x * 0.0039, x - 123.68; 1 for x - 0.5); else None."""
    from onnx import numpy_helper

    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    readers = [n for n in model.graph.node if name in n.input]
    while len(readers) == 1 and readers[0].op_type in ("Cast", "Transpose", "Identity"):
        readers = [n for n in model.graph.node if readers[0].output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type not in ("Sub", "Add", "Mul", "Div"):
        return None
    node = readers[0]
    other = [constants[i] for i in node.input if i in constants]
    if len(other) != 1:
        return None
    size = float(np.abs(other[0]).max(initial=0.0))
    large = size < 0.02 if node.op_type == "Mul" else size > 2.0
    return 255 if large else 1


def _load(path: Path):
    """The model in ``path``, its external data (tensors stored beside it) loaded; one line for a
    truncated file, a file that is not ONNX, or external data that is missing."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's and onnx's own exception types
        raise OnnxcamError(f"{path}: not a valid ONNX model (truncated, or not ONNX): {first_line(exc)}") from exc
    external = [t for t in model.graph.initializer if uses_external_data(t)]
    for tensor in external:
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not (path.parent / location).is_file():
            raise OnnxcamError(f"{path}: its weights are stored outside it, in {location!r}, which is not next to "
                               "it; copy that file beside the model")
    if external:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise OnnxcamError(f"{path}: cannot read its external weights: {first_line(exc)}") from exc
    return model


def _shape(value) -> list:
    """A graph output's declared shape: ints, names of dynamic axes, "?" where unknown."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def _class_output(model, path: Path, output: Optional[str]) -> str:
    """The output holding the class scores: ``output``, or the file's only output; refused, naming
    what it is, where the file gives a map per pixel or several outputs (detectors)."""
    outputs = {o.name: _shape(o) for o in model.graph.output}
    listed = ", ".join(f"{name} {shape}" for name, shape in outputs.items())
    if output is not None and output not in outputs:
        raise OnnxcamError(f"--output-name: {path} has no output {output!r} (it has {listed})")
    if output is None and len(outputs) > 1:
        raise OnnxcamError(f"{path}: has {len(outputs)} outputs ({listed}); a classifier gives one [N, classes] "
                           "output: name the class scores with --output-name (a detector is not a classifier)")
    output = output or next(iter(outputs))
    shape = outputs[output]
    if sum(isinstance(d, int) and d > 1 for d in shape[1:]) > 1:
        raise OnnxcamError(f"{path}: output {output!r} has shape {shape}, a map per position (a segmentation or "
                           "detection network), not [N, classes] class scores; onnxcam explains classifiers")
    return output


def _logits_behind(model, output: str) -> tuple[str, Optional[str]]:
    """The tensor whose (log-)softmax or sigmoid ``output`` is, through reshapes, and which of
    them; else ``output`` itself and None."""
    producer = {name: node for node in model.graph.node for name in node.output}
    name = output
    while name in producer and producer[name].op_type in _SHAPE_OPS:
        name = producer[name].input[0]
    node = producer.get(name)
    if node is not None and node.op_type in _CLASS_OPS:  # over the classes (a Sigmoid has no axis)
        axis = next((a.i for a in node.attribute if a.name == "axis"), None)
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        if (opset < 13 and axis in (None, 1)) or (opset >= 13 and axis in (1, -1, None)):
            return node.input[0], _CLASS_OPS[node.op_type]
    return output, None


def classifier(source: OnnxSource, channels: str = "RGB") -> OnnxClassifier:
    """The file as a torch module taking RGB NCHW batches (``channels``: the file's order)."""
    module = OnnxClassifier(source.model, source.image.name, source.logits, source.image.layout,
                            channels.upper(), source.image.batch, gray=source.image.channels == 1).eval()
    module.settle_shape_values(source.image.size)
    return module


@dataclass
class LayerChoice:
    """A tensor of the graph as a target layer: its shape, its layout when it is a map or a token
    grid, and why it is not a candidate (None: it is one)."""

    name: str
    shape: tuple[int, ...]
    layout: Optional[str]
    excluded: Optional[str] = None


def layer_choices(module: OnnxClassifier, size: Sequence[int]) -> list[LayerChoice]:
    """Every computed tensor of rank 3 or 4, in graph order, judged as a target layer: a map
    [N, C, h, w] or a token grid (see :mod:`onnxcam_export.layer_layouts`) with more than one
    position, off the attention path, that the logits' gradient reaches (on a random probe)."""
    outputs: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    names = module.taps()

    def keep(name: str):
        def hook(_, args, output):
            if output.requires_grad:
                output.retain_grad()
            outputs[name] = output
        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in names]
    try:
        with torch.enable_grad():
            x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
            logits = module(x)
            logits[0, int(logits[0].argmax())].backward()
    finally:
        for handle in handles:
            handle.remove()
    attention = module.attention_tensors()
    choices = []
    for name in names:
        value = outputs.get(name)
        if value is None or value.dim() not in (3, 4):
            continue
        shape = tuple(int(s) for s in value.shape)
        layout = detect_layout(shape)
        if layout == "nchw" and (shape[2] == 1 or shape[3] == 1):
            layout = None  # a [N, 1, 1, C] vector that a TensorFlow converter left channels-last is not a map
        why = None
        if name in attention:
            why = "attention weights or products, not a feature map"
        elif layout is None:
            why = "not a map with h, w > 1 nor a square token grid"
        elif value.grad is None or not bool((to_spatial(value.grad, layout) != 0).any()):
            why = "the logits' gradient does not reach its map"
        choices.append(LayerChoice(name, shape, layout, why))
    return choices


def tensor_candidates(module: OnnxClassifier, size: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """Tensors that can be target layers, with their shapes, in the order the graph computes
    them (see :func:`layer_choices`)."""
    return [(c.name, c.shape) for c in layer_choices(module, size) if c.excluded is None]


def default_target(module: OnnxClassifier, size: Sequence[int]) -> str:
    """The last candidate (:func:`layer_choices`): the map before global pooling, as the zoo
    picks; a random-weight model whose gradient reaches no map gets its last map or grid. Where
    that map is a batch norm or scale of the last ReLU's output, the ReLU's output: a batch norm
    after the ReLU subtracts its running mean, so wherever the ReLU is silent the map is negative,
    and a class with positive weights gets a Grad-CAM map clipped to zero everywhere."""
    return chosen_default(module, layer_choices(module, size))


def chosen_default(module: OnnxClassifier, choices: Sequence[LayerChoice]) -> str:
    """:func:`default_target` among ``choices`` (:func:`layer_choices` of ``module``)."""
    usable = [c for c in choices if c.excluded is None] or [
        c for c in choices if c.excluded == "the logits' gradient does not reach its map"]
    if not usable:
        raise OnnxcamError("no tensor of the graph is a spatial [N, C, h, w] map or a token grid; pass --layer")
    source = module.rectified_source(usable[-1].name)
    return source if source in {c.name for c in usable} else usable[-1].name


def export_onnx_file(path: str | Path, out: str | Path, target_layers: Optional[Sequence[str]] = None,
                     input_size: Optional[Sequence[int]] = None, mean: Optional[Sequence[float]] = None,
                     std: Optional[Sequence[float]] = None, scale: Optional[int] = None, channels: str = "RGB",
                     layout: Optional[str] = None, labels: Optional[Sequence[str]] = None,
                     output: Optional[str] = None, head: Optional[str] = None, verify: bool = True,
                     **options) -> ArtifactInfo:
    """Write the plain classifier file ``path`` as an explain-graph to ``out``.

    ``mean``, ``std`` (in ``channels`` order, on pixels in [0, ``scale``]; None: ImageNet's on
    [0, 1], or 0 and 1 on the pixels the file takes where it takes uint8 or normalizes its input
    itself, so nothing is applied twice), ``channels`` (``RGB`` or ``BGR``), ``layout`` (None:
    guessed from the input's shape) and ``input_size`` (for a dynamic one) describe what the file
    expects; ``output`` names the file output holding the class scores (default: its only one).
    ``head``: "softmax" or "sigmoid" (multi-label); default "sigmoid" where the output is a
    sigmoid of the logits, "softmax" otherwise (one logit: always "binary"). A final softmax or
    sigmoid is looked through: the logits before it are explained. ``target_layers`` are ONNX
    tensor names (default: :func:`default_target`). ``options`` go to
    :func:`onnxcam_export.export` (``guided``,
    ``plain_input_gradient``, ``score``, ``resize``, ``maps``, ``precision``, ``opset``).
    """
    from onnxcam_export import export

    channels = channels.upper()
    if channels not in ("RGB", "BGR"):
        raise OnnxcamError(f"--channels: expected rgb or bgr, got {channels.lower()!r}")
    if scale not in (None, 1, 255):
        raise OnnxcamError(f"--scale: expected 1 or 255, got {scale}")
    source = read_source(path, output, layout, input_size)
    raw = source.pixels is not None and mean is None and std is None
    scale = scale or (source.pixels if raw else 1)
    mean, std = ([0.0] * 3, [1.0] * 3) if raw else (mean or IMAGENET_MEAN, std or IMAGENET_STD)
    if source.image.channels == 1:
        mean, std = _gray_statistics(mean, std)
    module = classifier(source, channels)
    order = slice(None, None, -1) if channels == "BGR" else slice(None)
    target_layers = list(target_layers or [default_target(module, source.image.size)])
    quantization = module.quantization()
    if quantization is not None:
        quantization = {"form": source.form, **quantization}
    info = export(module, out, target_layers, input_size=source.image.size,
                  mean=list(mean)[order], std=list(std)[order], labels=labels,
                  source=f"onnx:{source.path.name}", verify=verify, quantization=quantization,
                  head=head or ("sigmoid" if source.probabilities == "sigmoid" else None), **options)
    info.scale = scale
    info.extra = {**info.extra, "onnx_input": source.image.name, "onnx_layout": source.image.layout,
                  "onnx_output": source.output, "onnx_probabilities": source.probabilities,
                  "onnx_uint8": source.uint8, "onnx_normalizes": source.pixels is not None and not source.uint8,
                  "onnx_float16": source.float16}
    if verify and info.precision == "float32":  # float16 graphs: the exporter's own check only
        try:
            check_against_file(Path(out), source, info, channels)
            if info.quantization is not None:
                info.quantization["integer_kernels"] = check_fusion(source.model, out, info.layers,
                                                                   info.plain_input_gradient)
        except OnnxcamError:
            Path(out).unlink(missing_ok=True)
            raise
    store_metadata(Path(out), info)
    return info


def _gray_statistics(mean: Sequence[float], std: Sequence[float]) -> tuple[list[float], list[float]]:
    """A grayscale file's mean and std, the same on each of the graph's three input channels
    (ImageNet's, averaged, by default)."""
    if tuple(mean) == IMAGENET_MEAN and tuple(std) == IMAGENET_STD:
        mean, std = [round(float(np.mean(IMAGENET_MEAN)), 3)], [round(float(np.mean(IMAGENET_STD)), 3)]
    if len(set(mean)) != 1 or len(set(std)) != 1:
        raise OnnxcamError("--mean/--std: a grayscale file has one channel; give one value each")
    return [float(mean[0])] * 3, [float(std[0])] * 3


def store_metadata(out: Path, info: ArtifactInfo) -> None:
    """Write ``info`` as the metadata of the explain-graph ``out``."""
    import onnx

    model = onnx.load(str(out))
    for entry in model.metadata_props:
        if entry.key == artifact.METADATA_KEY:
            entry.value = info.to_json()
    onnx.save(model, str(out))


def file_input(x: np.ndarray, image: PlainInput, channels: str) -> np.ndarray:
    """An explain-graph input [N, 3, H, W] (RGB) as the file takes it."""
    x = luma(x) if image.channels == 1 else x[:, ::-1] if channels == "BGR" else x
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1) if image.layout == "NHWC" else x)


def shifted_model(model, tensors: Sequence[str], outputs: Sequence[str]):
    """A copy of ``model`` in which each tensor in ``tensors`` is shifted by a new input
    ``onnxcam_shift/<i>`` before anything reads it, and ``outputs`` are graph outputs."""
    import onnx
    from onnx import TensorProto, helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for i, name in enumerate(tensors):
        shifted, shift = f"{name}/onnxcam_shifted", f"onnxcam_shift/{i}"
        for node in graph.node:
            node.input[:] = [shifted if n == name else n for n in node.input]
        position = next((j + 1 for j, node in enumerate(graph.node) if name in node.output), 0)
        graph.node.insert(position, helper.make_node("Add", [name, shift], [shifted]))
        graph.input.append(helper.make_tensor_value_info(shift, TensorProto.FLOAT, None))
    present = {o.name for o in graph.output}
    graph.output.extend(onnx.ValueInfoProto(name=name) for name in outputs if name not in present)
    return copy


def check_against_file(out: Path, source: OnnxSource, info: ArtifactInfo, channels: str) -> None:
    """Compare the explain-graph ``out`` with the original file, run by onnxruntime: logits
    (relative L2 <= LOGITS_ERROR), activations, and per target layer the directional
    derivative of the explained score along three random unit directions (error <=
    RELATIVE_ERROR of the gradient's norm) and along the graph's own gradient (a check of its
    scale, <= SCALE_ERROR) against central finite differences of the file, at the best of
    FD_STEPS; the same for the plain input gradient when the graph has one."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    cpu = ["CPUExecutionProvider"]
    graph = ort.InferenceSession(str(out), options, providers=cpu)
    original = ort.InferenceSession(
        shifted_model(source.model, info.layers, [source.logits, *info.layers]).SerializeToString(),
        options, providers=cpu)
    rng = np.random.default_rng(0)
    h, w = info.input_size
    x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    if info.scale == 255:
        x *= 50.0  # inputs of the file's own range
    feeds = {artifact.INPUT: x, artifact.TARGETS: np.array([[-1]], np.int64)}
    if artifact.LAYER_INPUT in {i.name for i in graph.get_inputs()}:
        shape = [i.shape for i in graph.get_inputs() if i.name == artifact.LAYER_INPUT][0]
        feeds[artifact.LAYER_INPUT] = np.zeros([0] + [int(d) for d in shape[1:]], np.float32)
    names = [artifact.LOGITS, artifact.TARGET_INDICES]
    for layer in info.layers:
        names += [artifact.activation_name(layer), artifact.gradient_name(layer)]
    names += [artifact.PLAIN_INPUT_GRADIENTS] if info.plain_input_gradient else []
    got = dict(zip(names, graph.run(names, feeds)))
    batch = source.image.batch or 1
    file_x = np.repeat(file_input(x, source.image, channels), batch, axis=0)
    shapes = {}

    def run(shifts: dict[str, np.ndarray], image: np.ndarray = file_x) -> list[np.ndarray]:
        feed = {source.image.name: image}
        for i, layer in enumerate(info.layers):
            shift = np.zeros(shapes.get(layer, (1,)), np.float32)
            if layer in shifts:
                shift[:1] = shifts[layer]  # the first row: the image checked
            feed[f"onnxcam_shift/{i}"] = shift
        return original.run([source.logits, *info.layers], feed)

    base = run({})
    shapes.update({layer: base[1 + i].shape for i, layer in enumerate(info.layers)})
    logits = base[0].reshape(batch, -1)[:1]
    if info.head == "binary":  # the graph serves the file's one logit z as [z, -z]
        logits = np.concatenate([logits, -logits], axis=1)
    if not _close(got[artifact.LOGITS], logits, info):
        raise OnnxcamError(f"export check failed: the explain-graph's logits differ from {source.path.name}'s "
                           f"(relative error {_relative(got[artifact.LOGITS], logits):.1e})")
    target = int(got[artifact.TARGET_INDICES][0, 0])

    def score(outputs: list[np.ndarray]) -> float:
        row = outputs[0].reshape(batch, -1)[0].astype(np.float64)
        row = np.concatenate([row, -row]) if info.head == "binary" else row
        if info.score == "softmax":
            row = np.exp(row - row.max())
            row /= row.sum()
        return float(row[target])

    for i, layer in enumerate(info.layers):
        layout = info.layouts.get(layer, "nchw")
        activation = to_spatial(torch.from_numpy(base[1 + i][:1]), layout).numpy()
        if activation.shape != got[artifact.activation_name(layer)].shape or \
                not _close(got[artifact.activation_name(layer)], activation, info):
            raise OnnxcamError(f"export check failed: activations of {layer!r} differ from the file's tensor")
        if info.quantization is not None:
            continue  # an INT8 file's score is a step function; the exporter's check compared the STE
        gradient = got[artifact.gradient_name(layer)][0, 0].astype(np.float64)
        like = torch.zeros(base[1 + i][:1].shape)  # the file's tensor: a shift of the map, none of prefix tokens

        def shifted_score(shift: np.ndarray, layer: str = layer, layout: str = layout, like=like) -> float:
            return score(run({layer: from_spatial(torch.from_numpy(shift), like, layout).numpy()}))

        _check_directions(layer, gradient, activation, shifted_score, rng, source)
    if info.plain_input_gradient and info.quantization is None:
        def input_score(shift: np.ndarray) -> float:
            moved = file_x.copy()
            moved[:1] += file_input(shift[:1], source.image, channels)
            return score(run({}, moved))

        _check_directions(artifact.INPUT, got[artifact.PLAIN_INPUT_GRADIENTS][0, 0].astype(np.float64), x,
                          input_score, rng, source)


def _check_directions(name: str, gradient: np.ndarray, value: np.ndarray, shifted_score, rng,
                      source: OnnxSource) -> None:
    """Central differences of ``shifted_score`` (the file's score with ``value`` shifted)
    against the graph's ``gradient``, along it and three random unit directions."""
    norm = float(np.linalg.norm(gradient))
    if norm == 0.0:
        return  # nothing to compare: the score does not depend on this tensor here
    size = max(float(np.linalg.norm(value.astype(np.float64))), 1e-6)
    # steps relative to the tensor's size, and one that moves the score by about 1e-2 (a tensor
    # of random-weight activations near 1e-9 would otherwise be shifted by less than float32 sees)
    steps = [step * size for step in FD_STEPS] + [SCORE_STEP / norm]
    shape = (1,) + gradient.shape
    for count, v in enumerate([gradient / norm] + [_unit(rng.standard_normal(gradient.shape)) for _ in range(3)]):
        expected = float(np.sum(gradient * v))
        error = min(abs(_finite_difference(shifted_score, v, step, shape) - expected) / norm for step in steps)
        bound = SCALE_ERROR if count == 0 else RELATIVE_ERROR
        if error > bound:
            raise OnnxcamError(f"export check failed: gradients of {name!r} differ from finite differences "
                               f"of {source.path.name} (relative error {error:.1e} > {bound:g})")


def _finite_difference(score, v: np.ndarray, step: float, shape: tuple[int, ...]) -> float:
    """Central difference of ``score(shift)`` along ``v``, for shifts of ``shape`` [1, ...]."""
    shift = (step * v).astype(np.float32).reshape(shape)
    return (score(shift) - score(-shift)) / (2 * step)


def _close(got: np.ndarray, expected: np.ndarray, info: ArtifactInfo) -> bool:
    """A forward value of the explain-graph against the file's: relative L2 <= LOGITS_ERROR; for
    an INT8 file, the exporter's tolerance of quantized values (QUANTIZED_VALUES: where the
    backward crosses a quantize-dequantize pair, the graph runs the op before it in float, and
    that rounds where the file's integer kernel requantizes)."""
    if info.quantization is None:
        return _relative(got, expected) <= LOGITS_ERROR
    return agrees(got, expected.reshape(got.shape), *QUANTIZED_VALUES)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64).reshape(np.shape(a))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)
