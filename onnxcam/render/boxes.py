"""Weakly-supervised localization: boxes around the salient regions of a heatmap.

As in the Grad-CAM paper's localization experiment: keep the pixels whose value is at least a
fraction (15 %) of the map's maximum and box the largest connected segment (or every segment
above a size).
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError

THRESHOLD = 0.15  # fraction of the map's maximum
MODES = ("largest", "all")


class Box(NamedTuple):
    """A box in pixel edges: columns x0..x1-1 and rows y0..y1-1 (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


def check_box_options(threshold: float, mode: str, min_area: float) -> None:
    """Raise OnnxcamError for options ``map_boxes`` cannot use."""
    if not 0.0 < threshold <= 1.0:
        raise OnnxcamError(f"box threshold: must be in (0, 1], got {threshold}")
    if mode not in MODES:
        raise OnnxcamError(f"box mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= min_area < 1.0:
        raise OnnxcamError(f"box min_area: must be a fraction of the image in [0, 1), got {min_area}")


def map_boxes(heatmap: np.ndarray, threshold: float = THRESHOLD, mode: str = "largest",
              min_area: float = 0.0) -> list[Box]:
    """Boxes of the 8-connected segments where ``heatmap`` >= ``threshold`` x its maximum,
    largest segment first: ``mode="largest"`` keeps that one, ``"all"`` every segment covering
    at least ``min_area`` of the image (a fraction). A map with no positive value has none."""
    check_box_options(threshold, mode, min_area)
    heat = np.asarray(heatmap, np.float32)
    if heat.ndim != 2:
        raise OnnxcamError(f"heatmap: expected an HxW array, got shape {heat.shape}")
    peak = float(heat.max()) if heat.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return []
    mask = (heat >= threshold * peak).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    segments = stats[1:]  # row 0 is the background
    segments = segments[np.argsort(-segments[:, cv2.CC_STAT_AREA], kind="stable")]
    if mode == "largest":
        segments = segments[:1]
    else:
        segments = segments[segments[:, cv2.CC_STAT_AREA] >= min_area * heat.size]
    return [Box(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in segments]
