"""Localization: does the map fall on the object? Scored against given boxes over the original
image (pixel edges [x0, y0, x1, y1], x1 and y1 exclusive, as :class:`onnxcam.render.boxes.Box`)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.base import HIGHER, Maps, Metric, Scene, Value
from onnxcam.render.boxes import THRESHOLD, Box, check_box_options, map_boxes

BoxList = Sequence[Sequence[float]]
ImageBoxes = Union[None, BoxList, Mapping[int, BoxList]]  # for every target, or by class
TOLERANCE = 15  # pixels: the pointing game's tolerance (Zhang et al. 2016)
MATCH_IOU = 0.5  # a map's box "finds" a given box at this IoU (the Grad-CAM paper's criterion)


def as_box(values: Sequence[float], where: str) -> Box:
    """Four numbers [x0, y0, x1, y1] (rounded to whole pixels) as a Box; OnnxcamError unless
    0 <= x0 < x1 and 0 <= y0 < y1."""
    if (isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                       for v in values)):
        raise OnnxcamError(f"{where}: a box is four numbers [x0, y0, x1, y1], got {values!r}")
    box = Box(*(int(np.floor(v + 0.5)) for v in values))
    if not (0 <= box.x0 < box.x1 and 0 <= box.y0 < box.y1):
        raise OnnxcamError(f"{where}: box {list(box)} must have 0 <= x0 < x1 and 0 <= y0 < y1")
    return box


def target_boxes(scene: Scene, boxes: Sequence[ImageBoxes]) -> list[list[list[Box]]]:
    """Per image and target, the given boxes: ``boxes[i]`` is None (none), a list of boxes for
    every target of image i, or a mapping class index -> list of boxes. OnnxcamError for a box
    that leaves its image."""
    if len(boxes) != len(scene):
        raise OnnxcamError(f"boxes: got {len(boxes)} entries for {len(scene)} images")
    out = []
    for i, given in enumerate(boxes):
        height, width = scene.geometries[i].original
        per_target = []
        for k, cls in enumerate(scene.classes[i]):
            chosen = given.get(int(cls), []) if isinstance(given, Mapping) else (given or [])
            listed = [as_box(b, f"boxes: {scene.names[i]}") for b in chosen]
            for box in listed:
                if box.x1 > width or box.y1 > height:
                    raise OnnxcamError(f"boxes: {scene.names[i]}: box {list(box)} lies outside the "
                                       f"image ({width} x {height} pixels)")
            per_target.append(listed)
        out.append(per_target)
    return out


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = max(0, min(a.x1, b.x1) - max(a.x0, b.x0))
    h = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = w * h
    return inter / (a.area + b.area - inter)


def distance(x: int, y: int, box: Box) -> float:
    """Euclidean distance in pixels from pixel (x, y) to the nearest pixel of ``box``."""
    dx = max(box.x0 - x, 0, x - (box.x1 - 1))
    dy = max(box.y0 - y, 0, y - (box.y1 - 1))
    return float(np.hypot(dx, dy))


class Localization(Metric):
    """Against the given boxes of each (image, target), on the map over the original image:

    - *pointing* (Zhang et al. 2016): 100 when the map's maximum (the first in row-major order)
      lies within ``tolerance`` pixels of a box, else 0; the mean is the hit rate;
    - *iou*: the IoU of the map's box (:func:`onnxcam.render.boxes.map_boxes`, largest segment at
      ``threshold`` of the peak) with the best-matching given box;
    - *energy* (Score-CAM's energy-based pointing game): the share of the map's sum inside the
      union of the boxes, in percent; *least_energy*: the smallest share any one box holds (the
      same for one box; with several instances, how well the least covered one is covered);
    - *found*: the share of the given boxes, in percent, that some segment of the map at
      ``threshold`` matches with IoU >= 0.5 (several instances need several segments).

    Pairs without boxes are not scored (NaN)."""

    name = "localization"
    values = (Value("pointing", "pointing game %", HIGHER), Value("iou", "box IoU", HIGHER),
              Value("energy", "energy in box %", HIGHER),
              Value("least_energy", "energy in least-covered box %", HIGHER),
              Value("found", "boxes found %", HIGHER))
    needs_boxes = True

    def __init__(self, tolerance: float = TOLERANCE, threshold: float = THRESHOLD):
        if not tolerance >= 0:
            raise OnnxcamError(f"tolerance: must be at least 0, got {tolerance}")
        check_box_options(threshold, "largest", 0.0)
        self.tolerance, self.threshold = tolerance, threshold

    def score(self, scene: Scene, maps: Maps, boxes: Optional[Sequence[ImageBoxes]]):
        if boxes is None:
            raise OnnxcamError("metric localization: needs boxes")
        given = target_boxes(scene, boxes)
        values = {v.name: np.full(scene.classes.shape, np.nan) for v in self.values}
        for i, heat in enumerate(maps.heatmaps):
            for k, truth in enumerate(given[i]):
                if truth and not maps.zero[i, k]:
                    for name, value in self.one(heat[k], truth).items():
                        values[name][i, k] = value
        return values, {}

    def one(self, heat: np.ndarray, truth: list[Box]) -> dict[str, float]:
        """The values for one map and its boxes."""
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        total = heat.sum(dtype=np.float64)
        inside = np.zeros(heat.shape, bool)
        for box in truth:
            inside[box.y0:box.y1, box.x0:box.x1] = True
        each = [heat[box.y0:box.y1, box.x0:box.x1].sum(dtype=np.float64) / total for box in truth]
        largest = map_boxes(heat, self.threshold)
        segments = map_boxes(heat, self.threshold, mode="all")
        return {
            "pointing": 100.0 * any(distance(x, y, box) <= self.tolerance for box in truth),
            "iou": max((iou(largest[0], box) for box in truth), default=0.0) if largest else 0.0,
            "energy": 100.0 * float(heat[inside].sum(dtype=np.float64) / total),
            "least_energy": 100.0 * float(min(each)),
            "found": 100.0 * np.mean([any(iou(s, box) >= MATCH_IOU for s in segments) for box in truth]),
        }
