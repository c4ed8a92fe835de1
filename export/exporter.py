"""Export a PyTorch classifier as an onnxcam explain-graph."""
from __future__ import annotations

import copy
import itertools
import math
import re
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from onnxcam.errors import OnnxcamError
from onnxcam.methods.maps import heatmaps
from onnxcam.quiet import quiet_loggers
from onnxcam.runtime import artifact
from onnxcam.runtime.artifact import DEFAULT_MAPS, ArtifactInfo
from onnxcam.runtime.runner import target_scores
from onnxcam_export import passes
from onnxcam_export.checks import expanded_constants
from onnxcam_export.in_graph_maps import IN_GRAPH_METHODS, in_graph_map
from onnxcam_export.layer_layouts import PREFIX_TOKENS, detect_layout, require_layout, spatial_shape
from onnxcam_export.layers import (
    cam_layer,
    channelwise_head,
    count_calls,
    default_layer,
    first_layer,
    last_shapes,
    require_layers,
)
from onnxcam_export.models import IMAGENET_MEAN, IMAGENET_STD
from onnxcam_export.passes.fx import attention_softmax
from onnxcam_export.passes.fx.class_token import class_token_tail
from onnxcam_export.passes.fx.decompositions import (
    explain_decompositions,
    folded_matmul,
    max_pool2d_indices,
    max_pool2d_indices_onnx,
)
from onnxcam_export.quantization import TRANSLATIONS as QUANTIZATION_TRANSLATIONS
from onnxcam_export.wrapper import ExplainWrapper

MAX_IR_VERSION = 10
# cosine and norm tolerance of an INT8 graph's forward values against eager torch: a float
# difference in the last bit moves a value across a rounding step, and the step travels on
# (EfficientNet-Lite0's last layer: cosine 0.998); the gradients, given those values, keep 0.999
QUANTIZED_VALUES = (0.99, 0.05)
_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def export(model: nn.Module, path: str | Path, target_layers: Optional[Sequence[str]] = None,
           input_size: tuple[int, int] = (224, 224), mean: Sequence[float] = IMAGENET_MEAN,
           std: Sequence[float] = IMAGENET_STD, labels: Optional[Sequence[str]] = None,
           guided: bool = False, plain_input_gradient: bool = False, score: str = "logit",
           resize: str = "stretch", resize_size: Optional[int] = None, source: str = "",
           layouts: Optional[dict[str, str]] = None, maps: Sequence[str] = DEFAULT_MAPS,
           precision: str = "float32", opset: int = 18, quantization: Optional[dict] = None,
           head: Optional[str] = None, verify: bool = True) -> ArtifactInfo:
    """Write ``model`` as an explain-graph to ``path`` and return the metadata stored in it.

    target_layers: module names (``"layer4"``, ``"features.29"``); default: the last module
    with a spatial output. ``guided`` adds ``input_gradients`` (guided backprop),
    ``plain_input_gradient`` adds ``plain_input_gradients``. ``score`` picks the
    differentiated score: the pre-softmax ``"logit"`` or the ``"softmax"`` probability.
    ``layouts`` maps a layer to ``"nhwc"`` (channels-last maps, Swin) or a token layout
    (``"tokens"``: a ViT sequence with a class token; ``"distilled"``, ``"patches"``: see
    :mod:`onnxcam_export.layer_layouts`); detected when not given, NCHW otherwise. ``maps`` names
    methods (see ``onnxcam_export.in_graph_maps.IN_GRAPH_METHODS``) whose final heatmaps the graph
    computes itself (default: Grad-CAM's), so the runtime does no work after the run for them;
    ``()`` for none. ``precision``
    ``"float16"`` writes fp16 weights, input and outputs (for GPUs; the class scores are
    differentiated in float32); the export check then compares with the float32 model.
    ``quantization`` describes an INT8 model (one holding
    :mod:`onnxcam_export.quantization`'s ops) for the metadata; its graph is checked as
    written, before onnxruntime fuses it into integer kernels whose rounding differs.
    ``head`` (see ``ArtifactInfo.head``): "softmax" or "sigmoid" (multi-label); a model with one
    logit z is always "binary", explained as the two classes [z, -z] (class 1: "not class 0").
    """
    model = model.eval()
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in frozen:
        p.requires_grad_(False)
    try:
        h, w = int(input_size[0]), int(input_size[1])
        probe = torch.randn(2, 3, h, w)
        layers = list(target_layers) if target_layers else [default_layer(model, probe)]
        require_layers(model, layers)
        unknown = [m for m in maps if m not in IN_GRAPH_METHODS]
        if unknown:
            raise OnnxcamError(f"maps: {', '.join(unknown)} cannot be computed in the graph "
                               f"(choose from {', '.join(IN_GRAPH_METHODS)})")
        maps = list(dict.fromkeys(maps))
        if precision not in _DTYPES:
            raise OnnxcamError(f"precision: expected one of {', '.join(_DTYPES)}, got {precision!r}")
        with torch.no_grad():
            logits = model(probe)
        if logits.dim() != 2:
            raise OnnxcamError(f"model output has shape {tuple(logits.shape)}; expected [N, classes] logits")
        head, num_classes, labels = _head(head, int(logits.shape[1]), labels, score)
        layouts = _layouts(model, layers, probe, layouts or {})
        calls = count_calls(model, layers, probe)
        shortcut = channelwise_head(model, layers, probe) if head != "binary" else None

        def wrap(module: nn.Module, shortcut: Optional[str] = None) -> ExplainWrapper:
            return ExplainWrapper(module, layers, score=score, guided=guided,
                                  plain_input_gradient=plain_input_gradient, calls=calls,
                                  layouts=layouts, maps=maps, head=shortcut, head_kind=head)

        wrapper = wrap(model if precision == "float32" else copy.deepcopy(model).to(_DTYPES[precision]), shortcut)
        info = ArtifactInfo(
            layers=layers, input_size=(h, w), mean=[float(v) for v in mean], std=[float(v) for v in std],
            num_classes=num_classes, labels=list(labels) if labels is not None else None,
            resize=resize, resize_size=resize_size, source=source, score=score, guided=guided,
            plain_input_gradient=plain_input_gradient, cam_layer=cam_layer(model, layers, probe),
            layouts={name: kind for name, kind in layouts.items() if kind != "nchw"},
            maps=maps, precision=precision, quantization=quantization, head=head,
        )
        first = first_layer(model, layers, probe)
        with class_token_tail(wrapper.model, layers) as class_token_only:
            onnx_model = _to_onnx(wrapper, info, first, opset)
        _write(onnx_model, info, Path(path))
        if verify:
            reference = wrap(model)  # plain autograd through every layer, in float32
            # the unchanged model needs the input repeated when the rewritten one did not
            reference.repeat_input = wrapper.repeat_input or class_token_only
            try:
                _verify(reference, Path(path), info, spatial_shape(first[1], layouts[first[0]]))
            except OnnxcamError:
                Path(path).unlink(missing_ok=True)  # never leave a file that failed its check
                raise
        return info
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)


def _head(head: Optional[str], columns: int, labels: Optional[Sequence[str]],
          score: str) -> tuple[str, int, Optional[list[str]]]:
    """The head kind, class count and labels of a model whose logits have ``columns`` columns."""
    if head not in (None, "softmax", "sigmoid"):
        raise OnnxcamError(f"head: expected softmax or sigmoid, got {head!r}")
    if columns == 1:  # a binary classifier's one logit z: the classes z and "not" (-z)
        if labels is not None and len(labels) not in (1, 2):
            raise OnnxcamError(f"labels: {len(labels)} names for a one-logit model (give 1 or 2)")
        name = labels[0] if labels else "positive"
        labels = list(labels) if labels and len(labels) == 2 else [name, f"not {name}"]
        head, columns = "binary", 2
    elif labels is not None and len(labels) != columns:
        raise OnnxcamError(f"labels: {len(labels)} names for a model with {columns} classes")
    head = head or "softmax"
    if head != "softmax" and score == "softmax":
        raise OnnxcamError(f"score: a {head} head's probabilities are per-class sigmoids; differentiate the logit "
                           "(--score logit)")
    return head, columns, None if labels is None else list(labels)


def export_plain(model: nn.Module, x: torch.Tensor, path: str | Path) -> None:
    """The model alone as a plain classifier file, exported as the explain-graph is (dynamo,
    opset 18, IR <= 10, weights inside the file), with a dynamic batch: ``input`` -> ``logits``."""
    import onnx

    with warnings.catch_warnings(), quiet_loggers(_EXPORT_LOGGERS):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("N")},))
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save(proto, str(path))


def _layouts(model: nn.Module, layers: list[str], probe: torch.Tensor, given: dict[str, str]) -> dict[str, str]:
    """Each target layer's output layout: as given, else detected from its shape."""
    shapes = last_shapes(model, layers, probe)
    layouts = {}
    for name in layers:
        layout = given.get(name) or detect_layout(shapes[name])
        if layout is None:
            raise OnnxcamError(f"layer {name!r}: output shape {list(shapes[name])} is not a spatial map "
                               "or a token grid; choose another layer")
        require_layout(name, layout, shapes[name])
        layouts[name] = layout
    return layouts


def output_names(info: ArtifactInfo) -> list[str]:
    """Graph outputs in the order :class:`ExplainWrapper` returns them."""
    names = [artifact.LOGITS, artifact.TARGET_INDICES, artifact.TARGET_PROBS]
    for layer in info.layers:
        names += [artifact.activation_name(layer), artifact.gradient_name(layer)]
    if info.plain_input_gradient:
        names.append(artifact.PLAIN_INPUT_GRADIENTS)
    if info.guided:
        names.append(artifact.INPUT_GRADIENTS)
    names += [artifact.map_name(method) for method in info.maps]
    if info.layer_input:
        names.append(artifact.LAYER_LOGITS)
    return names


def _inputs(info: ArtifactInfo, n: int, k: int, layer_shape: tuple[int, ...], m: int,
            ranked: bool = True) -> tuple[torch.Tensor, ...]:
    """Example graph inputs: ``input``, ``targets`` (ranks, or explicit classes) and, when
    the file has it, ``layer_input``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((n, 3) + tuple(info.input_size), generator=generator).to(_DTYPES[info.precision])
    column = torch.arange(k, dtype=torch.int64)
    targets = (-(column % 2 + 1) if ranked else column % info.num_classes).repeat(n, 1)
    if not info.layer_input:
        return x, targets
    return x, targets, torch.randn((m,) + tuple(layer_shape[1:]), generator=generator).to(x.dtype)


def example_sizes(taken: Sequence[int]) -> tuple[int, int, int]:
    """Batch, target and ``layer_input`` counts to trace with: the first three primes from 11
    that no other input dimension has. Symbolic tracing gives inputs' equal sizes one
    symbol, so a count equal to, say, a 13x13 layer would tie the dynamic dimension to it."""
    primes = (p for p in itertools.count(11) if all(p % d for d in range(2, math.isqrt(p) + 1)))
    taken = set(taken)
    n, k, m = itertools.islice((p for p in primes if p not in taken), 3)
    return n, k, m


def _batch_symbolic(args: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Fake copies of the example inputs in which only the dynamic dimensions (N of ``input``,
    N and K of ``targets``, M of ``layer_input``) are symbolic. make_fx's symbolic mode would
    make every dimension a symbol, image sizes and channels included, and every view of a
    windowed tensor then costs seconds of sympy: torchvision's Swin took ten minutes to trace."""
    from torch._dynamo.source import ConstantSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import (
        DimDynamic,
        ShapeEnv,
        StatelessSymbolicContext,
    )

    mode = FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv())
    dynamic = ({0}, {0, 1}, {0})  # equal sizes share a symbol (N of input and targets)
    return tuple(
        mode.from_tensor(arg, source=ConstantSource(f"input{i}"), symbolic_context=StatelessSymbolicContext(
            dynamic_sizes=[DimDynamic.DUCK if d in dims else DimDynamic.STATIC for d in range(arg.dim())]))
        for i, (arg, dims) in enumerate(zip(args, dynamic)))


def _trace(wrapper: ExplainWrapper, info: ArtifactInfo, layer_shape: tuple[int, ...]):
    """Trace forward and backward into one graph of forward ATen ops; returns (graph, inputs).

    Repeating the first target layer's output K times (and appending ``layer_input`` rows
    there) breaks models whose head reshapes by the input's batch size
    (``x.view(inputs.size(0), -1)``); those are traced again with the input repeated instead
    and without ``layer_input``.
    """
    def trace():
        n, k, m = example_sizes([3, *info.input_size, *layer_shape[1:]])
        args = _inputs(info, n, k, layer_shape, m)
        table = {**explain_decompositions(), **attention_softmax.DECOMPOSITIONS}
        with folded_matmul(), attention_softmax.unmasked_attention():
            graph = make_fx(wrapper, decomposition_table=table,
                            tracing_mode="symbolic", _allow_non_fake_inputs=True)(*_batch_symbolic(args))
        passes.run_fx_passes(graph)
        return graph, args

    with quiet_loggers(_EXPORT_LOGGERS):
        try:
            graph, args = trace()
        except OnnxcamError:
            raise
        except Exception as exc:
            if wrapper.repeat_input and not info.layer_input:
                raise OnnxcamError(f"tracing the model's backward failed: {_first_line(exc)}") from exc
            wrapper.repeat_input, info.layer_input = True, None
            try:
                graph, args = trace()
            except Exception as retry_exc:
                raise OnnxcamError(f"tracing the model's backward failed: {_first_line(retry_exc)}") from retry_exc
    left = sorted({str(n.target) for n in graph.graph.nodes
                   if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise OnnxcamError(f"cannot unroll backward op(s) {', '.join(left)} into forward ONNX ops")
    return graph, args


def _to_onnx(wrapper: ExplainWrapper, info: ArtifactInfo, first: tuple[str, tuple[int, ...]], opset: int):
    layout = wrapper.layouts[first[0]]
    info.layer_input = first[0] if not PREFIX_TOKENS.get(layout) else None  # prefix tokens cannot be fed
    graph, args = _trace(wrapper, info, spatial_shape(first[1], layout))
    batch, k, m = torch.export.Dim("N"), torch.export.Dim("K"), torch.export.Dim("M")
    names = [artifact.INPUT, artifact.TARGETS, artifact.LAYER_INPUT][:len(args)]
    dynamic = ({0: batch}, {0: batch, 1: k}, {0: m})[:len(args)]
    with warnings.catch_warnings(), quiet_loggers(_EXPORT_LOGGERS):
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph, args, dynamo=True, opset_version=opset, verbose=False,
                input_names=names, output_names=output_names(info), dynamic_shapes=dynamic,
                custom_translation_table={max_pool2d_indices._opoverload: max_pool2d_indices_onnx,
                                          **QUANTIZATION_TRANSLATIONS},
            )
        except Exception as exc:  # torch.onnx raises many types; keep the first line
            raise OnnxcamError(f"ONNX translation failed: {_first_line(exc)}") from exc
    onnx_model = program.model_proto
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in onnx_model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OnnxcamError(f"graph holds non-standard op(s) {', '.join(foreign)}")
    expanded = expanded_constants(onnx_model)
    if expanded:  # copies of weights at run time: memory that plain inference never needs
        raise OnnxcamError(f"graph expands {len(expanded)} constant(s) beyond their size, "
                           f"first: {expanded[0]}")
    passes.run_onnx_passes(onnx_model, info)
    return onnx_model


def _first_line(exc: BaseException) -> str:
    """One line about ``exc``: the op torch.onnx could not translate, else the first line."""
    text = str(exc).strip()
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([^']+)'", text)
    if missing:
        return f"op {missing.group(1)} has no ONNX translation"
    return text.splitlines()[0] if text else type(exc).__name__


# torch.onnx's progress chatter, silenced while exporting
_EXPORT_LOGGERS = ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo", "torch.fx",
                   "torch._subclasses", "torch._subclasses.fake_tensor")


def _write(onnx_model, info: ArtifactInfo, path: Path) -> None:
    import onnx

    onnx_model.ir_version = min(onnx_model.ir_version, MAX_IR_VERSION)
    del onnx_model.metadata_props[:]
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = artifact.METADATA_KEY, info.to_json()
    onnx_model.producer_name = "onnxcam"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))


def _verify(wrapper: ExplainWrapper, path: Path, info: ArtifactInfo, layer_shape: tuple[int, ...]) -> None:
    """Run the written graph once against eager torch: every output but the guided gradient
    (eager torch has no guided rule) must agree, and each in-graph heatmap must be the
    runtime's own heatmap of the graph's raw map."""
    import onnxruntime as ort

    args = _inputs(info, 2, 2, layer_shape, 3, ranked=False)  # ranks are ambiguous on tied logits
    names = [artifact.INPUT, artifact.TARGETS, artifact.LAYER_INPUT]
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 4  # the error is reported below, once
        if info.quantization is not None:  # the graph as written: the STE's exact arithmetic
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(None, {name: a.numpy() for name, a in zip(names, args)})
    except Exception as exc:  # onnxruntime's own exception types
        raise OnnxcamError(f"export check failed: onnxruntime cannot run the graph on the CPU "
                           f"({_first_line(exc)}); pass verify=False to skip the check") from exc
    expected = [t.detach().float().numpy() if t.is_floating_point() else t.numpy()
                for t in wrapper(*(a.float() if a.is_floating_point() else a for a in args))]
    outputs = dict(zip(output_names(info), got))
    maps_of_graph = {}
    if info.quantization is not None:  # a step of quantization noise in the activations moves a map
        # of cancelling channels: an INT8 graph's maps are checked against those of its own outputs
        pairs = [(torch.from_numpy(outputs[artifact.activation_name(layer)]).float(),
                  torch.from_numpy(outputs[artifact.gradient_name(layer)]).float()) for layer in info.layers]
        maps_of_graph = {artifact.map_name(method): in_graph_map(method, pairs, info.input_size).numpy()
                         for method in info.maps}
    for name, a, b in zip(output_names(info), got, expected):
        if name == artifact.INPUT_GRADIENTS:
            continue
        b = maps_of_graph.get(name, b)
        if name == artifact.TARGET_PROBS:  # of the graph's own logits, which are checked against torch:
            # near-tied logits (an architecture-only file's) leave the probabilities to float noise
            b = target_scores(outputs[artifact.LOGITS], outputs[artifact.TARGET_INDICES], info.probability)
        if a.shape != b.shape:
            raise OnnxcamError(f"export check failed: {name} has shape {a.shape}, torch gives {b.shape}")
        if a.dtype == np.int64:
            ok = np.array_equal(a, b)
        else:  # cosine and norm ratio, not max-abs: float noise may flip a ReLU mask or a max-pool tie
            quantized = info.quantization is not None and not name.startswith("gradients/")
            ok = agrees(a, b, *(QUANTIZED_VALUES if quantized else (0.999, 0.01)))
        if not ok:
            raise OnnxcamError(f"export check failed: {name} from the ONNX graph differs from torch")
    _verify_heatmaps(dict(zip([o.name for o in session.get_outputs()], got)), info)


def agrees(a: np.ndarray, b: np.ndarray, cosine: float, norm: float) -> bool:
    """Whether ``a`` has cosine >= ``cosine`` with ``b`` and a norm within ``norm`` of b's
    (both about zero: equal to 1e-6)."""
    a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    norm_a, norm_b = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    if norm_a * norm_b <= 1e-30:
        return bool(np.allclose(a64, b64, atol=1e-6))
    return float(a64 @ b64) >= cosine * norm_a * norm_b and abs(norm_a - norm_b) <= norm * norm_b


def _verify_heatmaps(outputs: dict[str, np.ndarray], info: ArtifactInfo) -> None:
    """Each ``heatmaps/<m>`` and ``zero_maps/<m>`` equal onnxcam.methods.maps.heatmaps of ``maps/<m>``
    (to float16 rounding in a float16 file)."""
    tolerance = 1e-4 if info.precision == "float32" else 2e-3
    for method in info.maps:
        expected, zero = heatmaps(outputs[artifact.map_name(method)].astype(np.float32), info.input_size)
        got = outputs[artifact.heatmap_name(method)].astype(np.float32)
        if not (np.array_equal(outputs[artifact.zero_map_name(method)], zero)
                and got.shape == expected.shape and float(np.abs(got - expected).max(initial=0.0)) <= tolerance):
            raise OnnxcamError(f"export check failed: {artifact.heatmap_name(method)} from the ONNX graph "
                               "differs from the runtime's heatmap of its map")
