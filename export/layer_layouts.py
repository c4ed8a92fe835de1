"""Target-layer outputs that are not [N, C, h, w], made spatial for CAM.

``nhwc``: channels-last maps such as Swin's. Token sequences [N, p + h*w, C] whose last h*w
tokens form the square patch grid (the ``reshape_transform`` that pytorch-grad-cam users write
by hand): ``tokens`` has p = 1 (a ViT's class token), ``distilled`` p = 2 (DeiT's class and
distillation tokens), ``patches`` p = 0 (a grid without prefix tokens: EfficientFormer's last
stage, LeViT, pooled ViTs).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from onnxcam.errors import OnnxcamError

PREFIX_TOKENS = {"patches": 0, "tokens": 1, "distilled": 2}  # token layouts: tokens before the grid
LAYOUTS = ("nchw", "nhwc", *PREFIX_TOKENS)


def detect_layout(shape: tuple[int, ...]) -> Optional[str]:
    """The layout an output of this shape most likely has; None if none fits."""
    if len(shape) == 4:
        return "nchw"
    if len(shape) == 3:
        for layout, prefix in PREFIX_TOKENS.items():
            grid = int(shape[1]) - prefix
            if grid > 1 and math.isqrt(grid) ** 2 == grid:
                return layout
    return None


def require_layout(layer: str, layout: str, shape: tuple[int, ...]) -> None:
    """Raise a one-line error when ``layout`` cannot describe an output of ``shape``."""
    if layout not in LAYOUTS:
        raise OnnxcamError(f"layout of {layer!r}: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout in PREFIX_TOKENS:
        grid = int(shape[1]) - PREFIX_TOKENS[layout] if len(shape) == 3 else 0
        fits = grid > 1 and math.isqrt(grid) ** 2 == grid
    else:
        fits = len(shape) == 4
    if not fits:
        raise OnnxcamError(f"layer {layer!r}: output shape {list(shape)} is not a {layout} map")


def to_spatial(output: torch.Tensor, layout: str) -> torch.Tensor:
    """[N, C, h, w] view of a layer output."""
    if layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    if layout in PREFIX_TOKENS:
        patches = output[:, PREFIX_TOKENS[layout]:]
        side = math.isqrt(int(patches.shape[1]))
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)
    return output


def from_spatial(spatial: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """Back to the layer's own layout; ``like`` (same rows) supplies the prefix tokens."""
    if layout == "nhwc":
        return spatial.permute(0, 2, 3, 1)
    if layout in PREFIX_TOKENS:
        tokens = spatial.permute(0, 2, 3, 1).reshape(spatial.shape[0], -1, spatial.shape[1])
        prefix = PREFIX_TOKENS[layout]
        return torch.cat([like[:, :prefix], tokens], dim=1) if prefix else tokens
    return spatial


def spatial_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape [N, C, h, w] of :func:`to_spatial` for an output of ``shape``."""
    if layout == "nhwc":
        return (shape[0], shape[3], shape[1], shape[2])
    if layout in PREFIX_TOKENS:
        side = math.isqrt(shape[1] - PREFIX_TOKENS[layout])
        return (shape[0], shape[2], side, side)
    return tuple(shape)
