"""CAM maps computed inside the explain-graph, so a session returns final maps instead of
[N, K, C, h, w] gradients: no host work after the run on a small model, no gradient copies on a
GPU. Each method mirrors the numpy one of the same name in onnxcam.methods.gradient (a test holds
the two equal); the heatmap made
from the map is added after translation (onnxcam_export.passes.onnx.append_heatmaps)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from onnxcam.methods.maps import RTOL32, TINY32
from onnxcam_export.passes.onnx.append_heatmaps import interpolation_matrix

Weights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _spatial_sum(x: torch.Tensor) -> torch.Tensor:
    return x.sum(dim=(-2, -1))


def _gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.mean(dim=(-2, -1))


def _gradcam_plus_plus(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    g2 = grads * grads
    sum_a = _spatial_sum(acts)[:, None, :, None, None]
    alpha = g2 / (2 * g2 + sum_a * g2 * grads + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return _spatial_sum(alpha * grads.clamp(min=0))


def _xgradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return _spatial_sum(grads * acts[:, None]) / (_spatial_sum(acts)[:, None] + 1e-7)


def _hirescam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads


def _layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return grads.clamp(min=0)


IN_GRAPH_METHODS: dict[str, Weights] = {
    "gradcam": _gradcam, "gradcam++": _gradcam_plus_plus, "xgradcam": _xgradcam,
    "hirescam": _hirescam, "layercam": _layercam,
}


def _weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_c W_c A_c) [N, K, h, w] for channel [N, K, C] or pixelwise [N, K, C, h, w] weights."""
    if weights.dim() == 3:  # one MatMul [N, K, C] x [N, C, h*w], not a product over [N, K, C, h, w]
        return (weights @ acts.flatten(2)).unflatten(-1, acts.shape[-2:]).clamp(min=0)
    return (weights * acts[:, None]).sum(dim=2).clamp(min=0)


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [N, K, h, w] to [N, K, H, W], as cv2.INTER_LINEAR."""
    h, w = int(maps.shape[-2]), int(maps.shape[-1])
    if (h, w) == tuple(size):
        return maps
    rows = torch.from_numpy(interpolation_matrix(int(size[0]), h)).to(maps.dtype)
    cols = torch.from_numpy(interpolation_matrix(int(size[1]), w)).to(maps.dtype)
    return rows @ maps @ cols.T


def _normalize(maps: torch.Tensor) -> torch.Tensor:
    """Min-max to [0, 1] per map; constant maps (span within float32 rounding) become zero."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    span = high - low
    constant = span <= torch.clamp(RTOL32 * torch.maximum(low.abs(), high.abs()), min=TINY32)
    scaled = (maps - low) / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.zeros_like(scaled), scaled).clamp(0, 1)


def in_graph_map(method: str, layers: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 size: tuple[int, int]) -> torch.Tensor:
    """``method``'s raw map from (activations [N, C, h, w], gradients [N, K, C, h, w]) per
    layer: [N, K, h, w] at the layer's resolution for one layer; for several, each normalized at
    its own resolution, resized to the input and averaged, as onnxcam.methods.maps.fuse_layers does.
    The final heatmap is added to the translated graph (onnxcam_export.passes.onnx.append_heatmaps)."""
    weights = IN_GRAPH_METHODS[method]
    maps = [_weighted_sum(weights(a, g), a) for a, g in layers]
    if len(maps) == 1:
        return maps[0]
    return torch.stack([_resize(_normalize(m), size) for m in maps]).mean(dim=0)
