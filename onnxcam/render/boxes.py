"""Weakly-supervised localization: boxes around the salient regions of a heatmap.

A *box rule* says which pixels of a map count as the object: ``peak:F`` keeps those at or above
a fraction F of the map's maximum (the rule of the Grad-CAM paper's localization experiment, at
15 %), ``mass:F`` the most relevant pixels that together hold a share F of the map's sum, and
``otsu`` those above Otsu's threshold of the map's values. The boxes are those of the rule's
8-connected segments, largest first (:func:`map_boxes`).

Which rule an explain-graph uses is chosen by measurement: per method, the rule that localizes
best on the calibration split of ``benchmarks/localization_set.py`` (``SHIPPED_RULES``, from
``benchmarks/results/localization.json``), unless the file carries its own, fitted to a user's
boxes by ``onnxcam evaluate --calibrate-boxes`` (``ArtifactInfo.box_rules``).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Optional, Union

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError

MODES = ("largest", "all")
MIN_AREA = 0.01  # mode "all": segments smaller than this share of the image are left out


class Box(NamedTuple):
    """A box in pixel edges: columns x0..x1-1 and rows y0..y1-1 (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


class BoxRule:
    """Which pixels of a map with a positive peak make its segments; subclasses set ``kind`` and
    implement :meth:`mask`. Written ``kind:value`` (``kind`` alone for rules without a value)."""

    kind = ""

    def __init__(self, value: Optional[float] = None):
        if value is not None and not 0.0 < value <= 1.0:
            raise OnnxcamError(f"box rule: {self.kind} takes a value in (0, 1], got {value:g}")
        self.value = value

    def mask(self, heat: np.ndarray, peak: float) -> np.ndarray:
        """The pixels kept (bool, the map's shape) of a finite map whose maximum is ``peak`` > 0."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}:{self.value:g}"

    def __repr__(self) -> str:
        return f"BoxRule({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BoxRule) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class PeakFraction(BoxRule):
    """The pixels at or above ``value`` times the map's maximum."""

    kind = "peak"

    def mask(self, heat, peak):
        return heat >= self.value * peak


class MassShare(BoxRule):
    """The most relevant pixels that together hold a share ``value`` of the map's positive sum
    (every pixel as relevant as the last one taken is kept too)."""

    kind = "mass"

    def mask(self, heat, peak):
        positive = np.clip(heat, 0.0, None).ravel()
        ordered = np.sort(positive)[::-1]
        reached = np.cumsum(ordered, dtype=np.float64)
        last = int(np.searchsorted(reached, self.value * reached[-1]))
        return heat >= ordered[min(last, ordered.size - 1)]


class Otsu(BoxRule):
    """The pixels above Otsu's threshold of the map's values (scaled to 256 levels of its peak),
    the split that maximizes the variance between the two classes; no value to choose."""

    kind = "otsu"

    def mask(self, heat, peak):
        levels = np.clip(np.round(heat / peak * 255.0), 0, 255).astype(np.uint8)
        level, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return levels > level


RULES: dict[str, type[BoxRule]] = {cls.kind: cls for cls in (PeakFraction, MassShare, Otsu)}
DEFAULT_RULE = "peak:0.15"  # a method without a measured rule: the Grad-CAM paper's
# Per method, the rule that won on the calibration split over EfficientNet-Lite0/1/2
# (python benchmarks/localization.py; a test keeps this equal to results/localization.json).
SHIPPED_RULES: dict[str, str] = {
    "gradcam": "otsu", "cam": "otsu", "gradcam++": "mass:0.4", "xgradcam": "otsu", "hirescam": "otsu",
    "layercam": "mass:0.4", "eigencam": "mass:0.9", "eigengradcam": "mass:0.9",
    "guided-backprop": "mass:0.6", "guided-gradcam": "mass:0.8", "saliency": "mass:0.6",
    "scorecam": "peak:0.3", "smoothgrad": "mass:0.4", "integrated-gradients": "mass:0.6", "rise": "mass:0.5",
    "occlusion": "mass:0.3",
}
RuleLike = Union[BoxRule, str, float]


def parse_rule(rule: RuleLike) -> BoxRule:
    """A BoxRule from a rule, a spec (``peak:0.3``, ``mass:0.5``, ``otsu``) or a number (the
    peak fraction); OnnxcamError for anything else."""
    if isinstance(rule, BoxRule):
        return rule
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return PeakFraction(float(rule))
    text = str(rule).strip().lower()
    kind, _, value = text.partition(":")
    cls = RULES.get(kind)
    if cls is None:
        raise OnnxcamError(f"box rule: expected peak:F, mass:F or otsu, got {rule!r}")
    if cls is Otsu:
        if value:
            raise OnnxcamError(f"box rule: otsu takes no value, got {rule!r}")
        return cls()
    try:
        return cls(float(value))
    except ValueError:
        raise OnnxcamError(f"box rule: {kind} needs a number in (0, 1], as {kind}:0.3, got {rule!r}") from None


def rule_for(method: str, stored: Optional[Mapping[str, str]] = None) -> BoxRule:
    """The box rule of ``method``: the one stored in the explain-graph (``ArtifactInfo.box_rules``),
    else the shipped measured one, else ``DEFAULT_RULE``."""
    stored = stored or {}
    return parse_rule(stored.get(method) or SHIPPED_RULES.get(method) or DEFAULT_RULE)


def check_box_options(mode: str, min_area: float) -> None:
    """Raise OnnxcamError for options ``map_boxes`` cannot use."""
    if mode not in MODES:
        raise OnnxcamError(f"box mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if not 0.0 <= min_area < 1.0:
        raise OnnxcamError(f"box min_area: must be a fraction of the image in [0, 1), got {min_area}")


def map_boxes(heatmap: np.ndarray, rule: RuleLike = DEFAULT_RULE, mode: str = "largest",
              min_area: float = MIN_AREA) -> list[Box]:
    """Boxes of the 8-connected segments of the pixels ``rule`` keeps, largest segment first:
    ``mode="largest"`` keeps that one, ``"all"`` every segment covering at least ``min_area`` of
    the image (a fraction). A map with no positive value has none."""
    rule = parse_rule(rule)
    check_box_options(mode, min_area)
    heat = np.asarray(heatmap, np.float32)
    if heat.ndim != 2:
        raise OnnxcamError(f"heatmap: expected an HxW array, got shape {heat.shape}")
    peak = float(heat.max()) if heat.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return []
    return segment_boxes(rule.mask(heat, peak), mode, min_area)


def segment_boxes(mask: np.ndarray, mode: str = "all", min_area: float = MIN_AREA) -> list[Box]:
    """Boxes of the 8-connected segments of a boolean mask, largest first (see :func:`map_boxes`)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    segments = stats[1:]  # row 0 is the background
    segments = segments[np.argsort(-segments[:, cv2.CC_STAT_AREA], kind="stable")]
    if mode == "largest":
        segments = segments[:1]
    else:
        segments = segments[segments[:, cv2.CC_STAT_AREA] >= min_area * mask.size]
    return [Box(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h, _ in segments]
