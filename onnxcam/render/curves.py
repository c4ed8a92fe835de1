"""Deletion and insertion curves of several methods as one PNG, drawn with OpenCV."""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

PANEL_W, PANEL_H = 460, 340  # pixels of one panel, plot area and margins
LEFT, RIGHT, TOP, BOTTOM = 52, 14, 34, 44
LEGEND_LINE = 20  # pixels per legend line
# RGB colours of the lines, in method order (Tableau's ten)
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
_FONT, _SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42
_BLACK, _GREY = (0, 0, 0), (210, 210, 210)
AXIS_LABELS = {"deletion": "fraction of pixels deleted", "insertion": "fraction of pixels inserted"}


def _text(image: np.ndarray, text: str, x: int, y: int, colour=_BLACK, scale: float = _SCALE) -> None:
    cv2.putText(image, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)


def _panel(name: str, curves: Mapping[str, np.ndarray]) -> np.ndarray:
    """One curve per method over [0, 1] x [0, 1], with axes, ticks and title."""
    image = np.full((PANEL_H, PANEL_W, 3), 255, np.uint8)
    width, height = PANEL_W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM

    def point(x: float, y: float) -> tuple[int, int]:
        return LEFT + round(x * width), TOP + round((1.0 - y) * height)

    for tick in np.linspace(0.0, 1.0, 5):
        cv2.line(image, point(tick, 0.0), point(tick, 1.0), _GREY, 1)
        cv2.line(image, point(0.0, tick), point(1.0, tick), _GREY, 1)
        x, y = point(tick, 0.0)
        _text(image, f"{tick:g}", x - 8, y + 16)
        x, y = point(0.0, tick)
        _text(image, f"{tick:g}", x - 36, y + 4)
    cv2.rectangle(image, point(0.0, 1.0), point(1.0, 0.0), _BLACK, 1)
    _text(image, f"{name}: probability of the target", LEFT, 20, scale=0.5)
    _text(image, AXIS_LABELS.get(name, "fraction of pixels"), LEFT + width // 2 - 90, PANEL_H - 10)
    for m, (method, curve) in enumerate(curves.items()):
        colour = COLOURS[m % len(COLOURS)]
        if not np.isnan(curve).any():
            xs = np.linspace(0.0, 1.0, len(curve))
            line = np.array([point(x, float(np.clip(y, 0.0, 1.0))) for x, y in zip(xs, curve)], np.int32)
            cv2.polylines(image, [line], False, colour, 2, cv2.LINE_AA)
    return image


def _legend(areas: Mapping[str, Mapping[str, float]], width: int) -> np.ndarray:
    """One line per method: its colour, name and each curve's area."""
    methods = list(next(iter(areas.values())))
    image = np.full((LEGEND_LINE * len(methods) + 8, width, 3), 255, np.uint8)
    for m, method in enumerate(methods):
        y = LEGEND_LINE * (m + 1)
        cv2.line(image, (LEFT, y - 4), (LEFT + 24, y - 4), COLOURS[m % len(COLOURS)], 2)
        _text(image, method, LEFT + 32, y)
        for c, (name, by_method) in enumerate(areas.items()):
            _text(image, f"{name} AUC {by_method[method]:.3f}", LEFT + 200 + 190 * c, y)
    return image


def plot_curves(curves: Mapping[str, Mapping[str, np.ndarray]],
                areas: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """RGB image with one panel per curve name (e.g. deletion, insertion) side by side and a
    legend below: ``curves[name][method]`` is the mean curve, ``areas[name][method]`` its area."""
    panels = np.concatenate([_panel(name, curves[name]) for name in curves], axis=1)
    return np.concatenate([panels, _legend(areas, panels.shape[1])], axis=0)
