"""What every map goes through: resizing to the image, min-max normalization to [0, 1] with
the all-zero flag, and fusing several layers. The one home of these rules on the host; the
in-graph heatmaps of ``onnxcam_export`` mirror them in torch (and a test holds the two equal).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np

RTOL32 = 32 * float(np.finfo(np.float32).eps)  # a float32 map's span this small beside its values is rounding
TINY32 = float(np.finfo(np.float32).tiny)  # a span below the least normal float32: its reciprocal overflows


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize maps [..., h, w] to [..., H, W] (cv2.INTER_LINEAR, half-pixel
    centres), in float32; maps already of that size are returned as they are."""
    maps = np.asarray(maps, np.float32)
    height, width = size
    if maps.shape[-2:] == (height, width):
        return maps
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), np.float32)
    for small, target in zip(flat, out):  # one call per map: OpenCV's many-channel resize is slower
        _resize_into(small, target)
    return out.reshape(*maps.shape[:-2], height, width)


def _resize_into(small: np.ndarray, target: np.ndarray) -> None:
    """One float32 map [h, w] bilinearly resized into ``target`` [H, W]."""
    cv2.resize(small, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_LINEAR)


def normalize_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalize each map [..., h, w] to [0, 1] in float32; returns (normalized, is_zero).

    A map is flagged ``is_zero`` and left all zero when it is constant: its span
    max - min is at most ``rtol * max(|min|, |max|)``, where rtol is 1e-12, or a few
    float32 ulps for float32 input (so rounding noise is not stretched to [0, 1]), and
    when it holds NaN or infinity. The result never contains NaN.
    """
    maps = np.asarray(maps)
    dtype = maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float64
    rtol = max(1e-12, 32 * float(np.finfo(dtype).eps))
    values = maps if maps.dtype == np.float32 else maps.astype(np.float64)
    flat = values.reshape(*values.shape[:-2], -1)
    # NaN and infinity reach the extremes, so finite extremes mean a finite map
    low = flat.min(axis=-1, initial=np.inf).astype(np.float64)
    high = flat.max(axis=-1, initial=-np.inf).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(low) & np.isfinite(high)
        zero = ~finite | (high - low <= np.maximum(rtol * np.maximum(np.abs(low), np.abs(high)), np.finfo(dtype).tiny))
        span = np.where(zero, 1.0, high - low).astype(values.dtype)[..., None, None]
        out = values - low.astype(values.dtype)[..., None, None]
        out /= span
    out = out.astype(np.float32, copy=False)
    out[zero] = 0.0
    return np.clip(out, 0.0, 1.0, out=out), zero


def heatmaps(maps: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``normalize_maps(resize_maps(maps, size))`` of float32 maps [..., h, w], the same
    numbers in one pass of OpenCV calls per map, in place (a range check of the small map, a
    resize, a min-max scan, a subtraction and a division): what a small model's explain spends
    after its graph run, where every NumPy call over the whole stack costs."""
    maps = np.ascontiguousarray(maps, np.float32)
    height, width = size
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), np.float32)
    zero = np.zeros(flat.shape[0], bool)
    same = flat.shape[1:] == (height, width)
    for i, (small, target) in enumerate(zip(flat, out)):
        if cv2.checkRange(small)[0]:  # finite, so finite after the resize (barring overflow)
            if same:
                target[...] = small
            else:
                _resize_into(small, target)
            low, high = cv2.minMaxLoc(target)[:2]
            if math.isfinite(low) and math.isfinite(high) and high - low > max(RTOL32 * max(abs(low), abs(high)),
                                                                                TINY32):
                # as normalize_maps: v - low <= high - low in float32, so the quotient is in [0, 1]
                np.subtract(target, np.float32(low), out=target)
                np.divide(target, np.float32(high - low), out=target)
                continue
        zero[i] = True  # constant, or NaN or infinity in it: all zero
        target.fill(0.0)
    return out.reshape(*maps.shape[:-2], height, width), zero.reshape(maps.shape[:-2])


def fuse_layers(maps: Sequence[np.ndarray], size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """One layer's maps [N, K, h, w] as they are; several layers as in pytorch-grad-cam: each
    min-max normalized at its own resolution (their scales are not comparable), resized to
    ``size`` (default: the largest layer's) and averaged."""
    if len(maps) == 1:
        return maps[0]
    size = size or max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return np.mean([resize_maps(normalize_maps(m)[0], size) for m in maps], axis=0)
