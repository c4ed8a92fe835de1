"""Target-layer outputs that are not [N, C, h, w], made spatial for CAM.

``nhwc``: channels-last maps such as Swin's. ``tokens``: a ViT token sequence [N, 1 + h*w, C]
whose first token is the class token; the rest form the square patch grid (the
``reshape_transform`` that pytorch-grad-cam users write by hand).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from onnxcam.errors import OnnxcamError

LAYOUTS = ("nchw", "nhwc", "tokens")


def detect_layout(shape: tuple[int, ...]) -> Optional[str]:
    """The layout an output of this shape most likely has; None if none fits."""
    if len(shape) == 4:
        return "nchw"
    if len(shape) == 3 and shape[1] > 1 and math.isqrt(shape[1] - 1) ** 2 == shape[1] - 1:
        return "tokens"
    return None


def require_layout(layer: str, layout: str, shape: tuple[int, ...]) -> None:
    """Raise a one-line error when ``layout`` cannot describe an output of ``shape``."""
    if layout not in LAYOUTS:
        raise OnnxcamError(f"layout of {layer!r}: expected one of {', '.join(LAYOUTS)}, got {layout!r}")
    fits = len(shape) == 4 if layout != "tokens" else detect_layout(shape) == "tokens"
    if not fits:
        raise OnnxcamError(f"layer {layer!r}: output shape {list(shape)} is not a {layout} map")


def to_spatial(output: torch.Tensor, layout: str) -> torch.Tensor:
    """[N, C, h, w] view of a layer output."""
    if layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    if layout == "tokens":
        side = math.isqrt(int(output.shape[1]) - 1)
        patches = output[:, 1:]
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)
    return output


def from_spatial(spatial: torch.Tensor, like: torch.Tensor, layout: str) -> torch.Tensor:
    """Back to the layer's own layout; ``like`` (same rows) supplies the class token."""
    if layout == "nhwc":
        return spatial.permute(0, 2, 3, 1)
    if layout == "tokens":
        tokens = spatial.permute(0, 2, 3, 1).reshape(spatial.shape[0], -1, spatial.shape[1])
        return torch.cat([like[:, :1], tokens], dim=1)
    return spatial


def spatial_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """Shape [N, C, h, w] of :func:`to_spatial` for an output of ``shape``."""
    if layout == "nhwc":
        return (shape[0], shape[3], shape[1], shape[2])
    if layout == "tokens":
        side = math.isqrt(shape[1] - 1)
        return (shape[0], shape[2], side, side)
    return tuple(shape)
