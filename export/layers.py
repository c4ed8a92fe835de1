"""Look inside a classifier: its candidate target layers, call counts and CAM head."""
from __future__ import annotations

import difflib
from typing import Optional, Sequence

import torch
from torch import nn

from onnxcam.errors import OnnxcamError

_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool2d)


def layer_shapes(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every named module, in the order their forward calls finish."""
    order: list[tuple[str, tuple[int, ...]]] = []

    def record(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                order.append((name, tuple(output.shape)))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return order


def candidate_layers(model: nn.Module, probe: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Modules whose output is a spatial map [N, C, h, w] with h*w > 1, last call of each, in order."""
    modules = dict(model.named_modules())
    last: dict[str, tuple[int, ...]] = {}
    for name, shape in layer_shapes(model, probe):
        last.pop(name, None)
        last[name] = shape
    return [(name, shape) for name, shape in last.items()
            if len(shape) == 4 and shape[2] * shape[3] > 1 and not isinstance(modules[name], _POOLING)]


def default_layer(model: nn.Module, probe: torch.Tensor) -> str:
    """The last module with a spatial output: the usual Grad-CAM target."""
    candidates = candidate_layers(model, probe)
    if not candidates:
        raise OnnxcamError("no module of the model has a spatial [N, C, h, w] output; pass target layers")
    return candidates[-1][0]


def require_layers(model: nn.Module, layers: Sequence[str]) -> None:
    """Raise a one-line error naming any layer the model does not have."""
    names = [n for n, _ in model.named_modules() if n]
    for layer in layers:
        if layer not in names:
            close = difflib.get_close_matches(layer, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise OnnxcamError(f"layer {layer!r}: no such module in the model{hint}")


def last_shapes(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of each layer at its last call."""
    shapes = {}
    for name, shape in layer_shapes(model, probe):
        if name in layers:
            shapes[name] = shape
    return shapes


def count_calls(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> dict[str, int]:
    """How many times each layer runs in one forward (shared modules run more than once)."""
    counts = dict.fromkeys(layers, 0)
    for name, _ in layer_shapes(model, probe):
        if name in counts:
            counts[name] += 1
    return counts


def first_layer(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> tuple[str, tuple[int, ...]]:
    """The target layer whose last call finishes first, and its output shape there."""
    calls = count_calls(model, layers, probe)
    seen = dict.fromkeys(layers, 0)
    for name, shape in layer_shapes(model, probe):
        if name in seen:
            seen[name] += 1
            if seen[name] == calls[name]:
                return name, shape
    raise OnnxcamError(f"target layer(s) {list(layers)} did not run in the forward pass")


def cam_layer(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> Optional[str]:
    """The target layer whose output reaches the logits through global average pooling and a
    linear layer alone (logits = W · mean_hw(A) + b), the head CAM is defined for; else None."""
    if not layers:
        return None
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output):
            captured[name] = output
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in layers]
    try:
        with torch.no_grad():
            logits = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    linears = [m for m in modules.values() if isinstance(m, nn.Linear) and m.out_features == logits.shape[1]]
    for name in layers:
        act = captured.get(name)
        if act is None or act.dim() != 4:
            continue
        pooled = act.mean(dim=(2, 3))
        for linear in linears:
            if linear.in_features != pooled.shape[1]:
                continue
            with torch.no_grad():
                predicted = linear(pooled)
            if torch.linalg.norm(predicted - logits) <= 1e-4 * max(float(torch.linalg.norm(logits)), 1e-12):
                return name
    return None


def _pointwise_classifier(module: nn.Module, classes: int) -> bool:
    """A linear layer, or a 1x1 convolution, with one output channel per class."""
    if isinstance(module, nn.Linear):
        return module.out_features == classes
    return (isinstance(module, nn.Conv2d) and module.out_channels == classes and module.groups == 1
            and module.kernel_size == (1, 1) and module.stride == (1, 1) and module.dilation == (1, 1)
            and module.padding in ((0, 0), "valid"))


def channelwise_head(model: nn.Module, layers: Sequence[str], probe: torch.Tensor) -> Optional[str]:
    """The classifier layer (a linear layer or a 1x1 convolution with one output channel per
    class) after which only per-channel ops reach the logits (none at all, or SqueezeNet's
    ReLU and average pooling), called once, on [N, C] or [N, C, h, w], after every target
    layer; else None. Checked on the probe: the gradient of a class's logit at that layer's
    output must vanish outside the class's own channel."""
    order = [name for name, _ in layer_shapes(model, probe)]
    modules = dict(model.named_modules())
    with torch.no_grad():
        classes = int(model(probe[:1]).shape[1])
    found = [n for n in modules if n and _pointwise_classifier(modules[n], classes) and order.count(n) == 1]
    if len(found) != 1 or any(layer not in order or order.index(layer) > order.index(found[0]) for layer in layers):
        return None
    name = found[0]
    captured: list[torch.Tensor] = []
    handle = modules[name].register_forward_hook(lambda module, args, output: captured.extend([args[0], output]))
    try:
        with torch.enable_grad():
            x = probe[:1].detach().requires_grad_(True)  # frozen weights: the input carries the graph
            logits = model(x)
            if captured[0].dim() not in (2, 4) or captured[1].dim() != captured[0].dim():
                return None
            checked = 0
            for c in torch.argsort(logits[0], descending=True)[:3].tolist():
                (grad,) = torch.autograd.grad(logits[0, c], captured[1], retain_graph=True)
                others = torch.cat([grad[:, :c], grad[:, c + 1:]], dim=1)
                if others.abs().max() > 0:
                    return None
                checked += bool(grad[:, c].abs().max() > 0)
    finally:
        handle.remove()
    return name if checked else None
