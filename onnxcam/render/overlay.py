"""Drawing heatmaps over images and writing PNGs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.images.decode import to_rgb_uint8
from onnxcam.images.geometry import Geometry


def colorize(heatmap01: np.ndarray) -> np.ndarray:
    """A [0, 1] heatmap as an RGB uint8 image in the JET colormap (blue = 0, red = 1)."""
    levels = np.round(np.clip(np.nan_to_num(heatmap01), 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def overlay(image_rgb_uint8: np.ndarray, heatmap01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a JET-colored heatmap over an RGB image: ``alpha`` * heat + (1 - ``alpha``) * image.

    A heatmap of another size is resized to the image (bilinear).
    """
    image = to_rgb_uint8(image_rgb_uint8)
    if not 0.0 <= alpha <= 1.0:
        raise OnnxcamError(f"alpha: must be between 0 and 1, got {alpha}")
    heat = np.asarray(heatmap01, np.float32)
    if heat.ndim != 2:
        raise OnnxcamError(f"heatmap: expected an HxW array, got shape {heat.shape}")
    if heat.shape != image.shape[:2]:
        heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(colorize(heat), alpha, image, 1.0 - alpha, 0.0)


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[int]]) -> np.ndarray:
    """A copy of ``rgb`` with each box [x0, y0, x1, y1] (pixel edges, x1 and y1 exclusive)
    drawn as a white frame with a black outline, its width growing with the image."""
    out = np.ascontiguousarray(rgb).copy()
    width = max(1, round(min(out.shape[:2]) / 150))
    for x0, y0, x1, y1 in boxes:
        corners = (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1)
        cv2.rectangle(out, *corners, (0, 0, 0), 3 * width)
        cv2.rectangle(out, *corners, (255, 255, 255), width)
    return out


def encode_png(rgb: np.ndarray, name: str = "image", level: Optional[int] = None) -> bytes:
    """An RGB uint8 image as the bytes of a PNG file. ``level``: None for OpenCV's default
    compression; 0 for none (no row filters either: about 20 times faster, twice the bytes
    of a photo overlay); 1-9 for zlib's levels."""
    if level is not None and not 0 <= level <= 9:
        raise OnnxcamError(f"level: PNG compression must be between 0 and 9, got {level}")
    params = [] if level is None else [cv2.IMWRITE_PNG_COMPRESSION, level]
    if level == 0 and hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV 4.11 and later
        params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE]
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(to_rgb_uint8(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise OnnxcamError(f"{name}: cannot encode PNG")
    return encoded.tobytes()


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 image as PNG, creating parent folders; returns the path."""
    path = Path(path)
    encoded = encode_png(rgb, str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded)
    except OSError as error:
        raise OnnxcamError(f"{path}: cannot write ({error.strerror or type(error).__name__})") from None
    return path


def gradient_image(attribution: np.ndarray, geometry: Optional[Geometry] = None) -> np.ndarray:
    """A signed input-space attribution [3, H, W] as an RGB uint8 image: centred, scaled to
    0.1 per standard deviation around mid-gray and clipped (the usual guided-backprop
    rendering); with ``geometry``, mapped onto the original image (black outside a crop)."""
    values = np.asarray(attribution, np.float64)
    values = np.clip((values - values.mean()) / (values.std() + 1e-5) * 0.1 + 0.5, 0.0, 1.0)
    if geometry is not None:
        values = np.stack([geometry.to_original(channel) for channel in values])
    return np.round(values.transpose(1, 2, 0) * 255.0).astype(np.uint8)
