"""Export a PyTorch classifier as an onnxcam explain-graph."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.proxy_tensor import make_fx

from onnxcam import artifact
from onnxcam.artifact import ArtifactInfo
from onnxcam.errors import OnnxcamError
from onnxcam.export.decompositions import explain_decompositions
from onnxcam.export.inspect import (
    cam_layer,
    count_calls,
    default_layer,
    require_layers,
)
from onnxcam.export.wrapper import ExplainWrapper

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Example sizes for tracing: primes that no channel or spatial size will equal, so the
# dynamic batch and target dimensions are never specialised to a constant.
_EXAMPLE_N, _EXAMPLE_K = 11, 13
MAX_IR_VERSION = 10


def export(model: nn.Module, path: str | Path, target_layers: Optional[Sequence[str]] = None,
           input_size: tuple[int, int] = (224, 224), mean: Sequence[float] = IMAGENET_MEAN,
           std: Sequence[float] = IMAGENET_STD, labels: Optional[Sequence[str]] = None,
           guided: bool = False, plain_input_gradient: bool = False, score: str = "logit",
           resize: str = "stretch", resize_size: Optional[int] = None, source: str = "",
           opset: int = 18, verify: bool = True) -> ArtifactInfo:
    """Write ``model`` as an explain-graph to ``path`` and return the metadata stored in it.

    target_layers: module names (``"layer4"``, ``"features.29"``); default: the last module
    with a spatial output. ``guided`` adds ``input_gradients`` (guided backprop),
    ``plain_input_gradient`` adds ``plain_input_gradients``. ``score`` picks the
    differentiated score: the pre-softmax ``"logit"`` or the ``"softmax"`` probability.
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
        with torch.no_grad():
            logits = model(probe)
        if logits.dim() != 2:
            raise OnnxcamError(f"model output has shape {tuple(logits.shape)}; expected [N, classes] logits")
        num_classes = int(logits.shape[1])
        if labels is not None and len(labels) != num_classes:
            raise OnnxcamError(f"labels: {len(labels)} names for a model with {num_classes} classes")
        wrapper = ExplainWrapper(model, layers, score=score, guided=guided,
                                 plain_input_gradient=plain_input_gradient,
                                 calls=count_calls(model, layers, probe))
        info = ArtifactInfo(
            layers=layers, input_size=(h, w), mean=[float(v) for v in mean], std=[float(v) for v in std],
            num_classes=num_classes, labels=list(labels) if labels is not None else None,
            resize=resize, resize_size=resize_size, source=source, score=score, guided=guided,
            plain_input_gradient=plain_input_gradient, cam_layer=cam_layer(model, layers, probe),
        )
        onnx_model = _to_onnx(wrapper, info, opset)
        _write(onnx_model, info, Path(path))
        if verify:
            _verify(wrapper, Path(path), info)
        return info
    finally:
        for p, flag in frozen.items():
            p.requires_grad_(flag)


def output_names(info: ArtifactInfo) -> list[str]:
    """Graph outputs in the order :class:`ExplainWrapper` returns them."""
    names = [artifact.LOGITS, artifact.TARGET_INDICES]
    for layer in info.layers:
        names += [artifact.activation_name(layer), artifact.gradient_name(layer)]
    if info.plain_input_gradient:
        names.append(artifact.PLAIN_INPUT_GRADIENTS)
    if info.guided:
        names.append(artifact.INPUT_GRADIENTS)
    return names


def _trace(wrapper: ExplainWrapper, x: torch.Tensor, targets: torch.Tensor) -> torch.fx.GraphModule:
    """Trace forward and backward into one graph of forward ATen ops.

    Repeating the first target layer's output K times breaks models whose head reshapes by
    the input's batch size (``x.view(inputs.size(0), -1)``); those are traced again with the
    input repeated instead.
    """
    def trace():
        return make_fx(wrapper, decomposition_table=explain_decompositions(),
                       tracing_mode="symbolic", _allow_non_fake_inputs=True)(x, targets)

    with _quiet_loggers():
        try:
            graph = trace()
        except OnnxcamError:
            raise
        except Exception as exc:
            if wrapper.repeat_input:
                raise OnnxcamError(f"tracing the model's backward failed: {_first_line(exc)}") from exc
            wrapper.repeat_input = True
            try:
                graph = trace()
            except Exception as retry_exc:
                raise OnnxcamError(f"tracing the model's backward failed: {_first_line(retry_exc)}") from retry_exc
    left = sorted({str(n.target) for n in graph.graph.nodes
                   if n.op == "call_function" and "backward" in str(n.target)})
    if left:
        raise OnnxcamError(f"cannot unroll backward op(s) {', '.join(left)} into forward ONNX ops")
    return graph


def _to_onnx(wrapper: ExplainWrapper, info: ArtifactInfo, opset: int):
    h, w = info.input_size
    x = torch.randn(_EXAMPLE_N, 3, h, w)
    targets = torch.full((_EXAMPLE_N, _EXAMPLE_K), -1, dtype=torch.int64)
    graph = _trace(wrapper, x, targets)
    batch, k = torch.export.Dim("N"), torch.export.Dim("K")
    with warnings.catch_warnings(), _quiet_loggers():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                graph, (x, targets), dynamo=True, opset_version=opset, verbose=False,
                input_names=[artifact.INPUT, artifact.TARGETS], output_names=output_names(info),
                dynamic_shapes=({0: batch}, {0: batch, 1: k}),
            )
        except Exception as exc:  # torch.onnx raises many types; keep the first line
            raise OnnxcamError(f"ONNX translation failed: {_first_line(exc)}") from exc
    onnx_model = program.model_proto
    foreign = sorted({f"{n.domain}::{n.op_type}" for n in onnx_model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise OnnxcamError(f"graph holds non-standard op(s) {', '.join(foreign)}")
    return onnx_model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _quiet_loggers:
    """Silence torch.onnx's progress chatter while exporting."""

    names = ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo", "torch.fx", "torch._subclasses", "torch._subclasses.fake_tensor")

    def __enter__(self):
        self.levels = {n: logging.getLogger(n).level for n in self.names}
        for n in self.names:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)


def _write(onnx_model, info: ArtifactInfo, path: Path) -> None:
    import onnx

    onnx_model.ir_version = min(onnx_model.ir_version, MAX_IR_VERSION)
    del onnx_model.metadata_props[:]
    entry = onnx_model.metadata_props.add()
    entry.key, entry.value = artifact.METADATA_KEY, info.to_json()
    onnx_model.producer_name = "onnxcam"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(path))


def _verify(wrapper: ExplainWrapper, path: Path, info: ArtifactInfo) -> None:
    """Run the written graph once against eager torch: logits and layer gradients must agree."""
    import onnxruntime as ort

    h, w = info.input_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[-1, -2], [0, -1]], dtype=torch.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {artifact.INPUT: x.numpy(), artifact.TARGETS: targets.numpy()})
    expected = [t.detach().numpy() for t in wrapper(x, targets)]
    names = output_names(info)
    for name, a, b in zip(names, got, expected):
        if name == artifact.INPUT_GRADIENTS:  # eager torch has no guided rule to compare with
            continue
        if a.shape != b.shape:
            raise OnnxcamError(f"export check failed: {name} has shape {a.shape}, torch gives {b.shape}")
        if a.dtype == np.int64:
            ok = np.array_equal(a, b)
        else:
            scale = max(float(np.linalg.norm(b)), 1e-12)
            ok = float(np.linalg.norm(a - b)) / scale < 1e-3
        if not ok:
            raise OnnxcamError(f"export check failed: {name} from the ONNX graph differs from torch")
