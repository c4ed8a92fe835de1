"""Localization: does the map fall on the object? Scored against given boxes over the original
image (pixel edges [x0, y0, x1, y1], x1 and y1 exclusive, as :class:`onnxcam.render.boxes.Box`)."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.base import HIGHER, Maps, Metric, Scene, Value
from onnxcam.render.boxes import Box, BoxRule, RuleLike, map_boxes, parse_rule, segment_boxes

BoxList = Sequence[Sequence[float]]
ImageBoxes = Union[None, BoxList, Mapping[int, BoxList]]  # for every target, or by class
TOLERANCE = 15  # pixels: the pointing game's tolerance (Zhang et al. 2016)
MATCH_IOU = 0.5  # a map's box "finds" a given box at this IoU (the Grad-CAM paper's criterion)
BOXACC_IOUS = (0.3, 0.5, 0.7)  # MaxBoxAccV2's IoU criteria
BOXACC_THRESHOLDS = np.arange(100) / 100.0  # and its thresholds, fractions of the map's peak
CURVE_SIDE = 224  # pixels: the longer side the threshold sweep runs at


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
    - *energy* (Score-CAM's energy-based pointing game): the share of the map's sum inside the
      union of the boxes, in percent; *least_energy*: the smallest share any one box holds (the
      same for one box; with several instances, how well the least covered one is covered);
    - *iou*: the IoU of the map's box (:func:`onnxcam.render.boxes.map_boxes`: the largest
      segment of the box rule, ``rule`` or else the method's) with the best-matching given box;
      *box_acc*: 100 when that IoU is at least 0.5 (the Grad-CAM paper's criterion);
    - *found*: the share of the given boxes, in percent, that some segment of the rule (mode
      "all") matches with IoU >= 0.5 (several instances need several segments);
    - *maxboxacc* (MaxBoxAccV2, Choe et al. 2020), a value of the whole set: at each threshold
      (0, 0.01, ..., 0.99 of the peak) the share of maps of which some segment's box matches
      some given box at IoU >= delta; the best threshold's share, averaged over delta in
      0.3, 0.5, 0.7 (per-map hits are the curves ``boxacc_30``, ``boxacc_50``, ``boxacc_70``).

    Pairs without boxes are not scored (NaN)."""

    name = "localization"
    values = (Value("pointing", "pointing game %", HIGHER), Value("energy", "energy in box %", HIGHER),
              Value("least_energy", "energy in least-covered box %", HIGHER, summary=False),
              Value("iou", "box IoU", HIGHER), Value("box_acc", "box IoU ≥ 0.5 %", HIGHER),
              Value("found", "boxes found %", HIGHER), Value("maxboxacc", "MaxBoxAccV2 %", HIGHER))
    maxima = {"maxboxacc": tuple(f"boxacc_{round(100 * d)}" for d in BOXACC_IOUS)}
    needs_boxes = True

    def __init__(self, tolerance: float = TOLERANCE, rule: Optional[RuleLike] = None):
        """``rule``: the box rule of ``iou``, ``box_acc`` and ``found`` for every method (None:
        each method's own, ``Maps.box_rule``)."""
        if not tolerance >= 0:
            raise OnnxcamError(f"tolerance: must be at least 0, got {tolerance}")
        self.tolerance, self.rule = tolerance, None if rule is None else parse_rule(rule)

    def score(self, scene: Scene, maps: Maps, boxes: Optional[Sequence[ImageBoxes]]):
        if boxes is None:
            raise OnnxcamError("metric localization: needs boxes")
        given = target_boxes(scene, boxes)
        rule = self.rule or maps.box_rule
        values = {v.name: np.full(scene.classes.shape, np.nan) for v in self.values if v.name not in self.maxima}
        curves = {name: np.full(scene.classes.shape + (len(BOXACC_THRESHOLDS),), np.nan)
                  for name in self.maxima["maxboxacc"]}
        for i, heat in enumerate(maps.heatmaps):
            for k, truth in enumerate(given[i]):
                if truth and not maps.zero[i, k]:
                    for name, value in self.one(heat[k], truth, rule).items():
                        values[name][i, k] = value
                    for name, hits in zip(curves, box_accuracy_curves(heat[k], truth)):
                        curves[name][i, k] = hits
        return values, curves

    def one(self, heat: np.ndarray, truth: list[Box], rule: BoxRule) -> dict[str, float]:
        """The per-pair values for one map and its boxes."""
        y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
        total = heat.sum(dtype=np.float64)
        inside = np.zeros(heat.shape, bool)
        for box in truth:
            inside[box.y0:box.y1, box.x0:box.x1] = True
        each = [heat[box.y0:box.y1, box.x0:box.x1].sum(dtype=np.float64) / total for box in truth]
        largest = map_boxes(heat, rule)
        segments = map_boxes(heat, rule, mode="all")
        best = max((iou(largest[0], box) for box in truth), default=0.0) if largest else 0.0
        return {
            "pointing": 100.0 * any(distance(x, y, box) <= self.tolerance for box in truth),
            "energy": 100.0 * float(heat[inside].sum(dtype=np.float64) / total),
            "least_energy": 100.0 * float(min(each)),
            "iou": best,
            "box_acc": 100.0 * (best >= MATCH_IOU),
            "found": 100.0 * np.mean([any(iou(s, box) >= MATCH_IOU for s in segments) for box in truth]),
        }


def box_accuracy_curves(heat: np.ndarray, truth: Sequence[Box]) -> np.ndarray:
    """MaxBoxAccV2's hits of one map: [len(BOXACC_IOUS), len(BOXACC_THRESHOLDS)], 100 where
    some segment's box at that threshold (of the peak) matches some box of ``truth`` at that IoU.
    A map larger than CURVE_SIDE is scored shrunk to it (:func:`shrunk`)."""
    heat, truth = shrunk(heat, truth)
    peak = float(heat.max())
    hits = np.zeros((len(BOXACC_IOUS), len(BOXACC_THRESHOLDS)))
    for t, threshold in enumerate(BOXACC_THRESHOLDS):
        best = max((iou(s, box) for s in segment_boxes(heat >= threshold * peak, min_area=0.0)
                    for box in truth), default=0.0)
        hits[:, t] = 100.0 * (best >= np.asarray(BOXACC_IOUS))
    return hits


def shrunk(heat: np.ndarray, truth: Sequence[Box]) -> tuple[np.ndarray, list[Box]]:
    """A map whose longer side exceeds CURVE_SIDE shrunk to it, and its boxes scaled alike (to
    fractional edges): threshold sweeps cost less, IoUs barely move."""
    scale = min(1.0, CURVE_SIDE / max(heat.shape))
    if scale == 1.0:
        return heat, list(truth)
    size = (max(1, round(heat.shape[1] * scale)), max(1, round(heat.shape[0] * scale)))
    return (cv2.resize(np.asarray(heat, np.float32), size, interpolation=cv2.INTER_AREA),
            [Box(*(v * scale for v in box)) for box in truth])
