"""Figures: the photo and its explanations (methods x classes) as one titled grid image."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import cv2
import numpy as np

from onnxcam.render.boxes import Box
from onnxcam.render.overlay import draw_boxes, gradient_image, overlay

if TYPE_CHECKING:  # the results' type only: render never imports the API
    from onnxcam.api.explainer import ExplainResult

TILE_HEIGHT = 224  # pixels of image in every tile
MIN_TILE_WIDTH, MAX_TILE_WIDTH = 112, 448  # tile width follows the photo's aspect, within these
TITLE_HEIGHT = 36  # two lines of text above every tile
GAP = 4  # white space between and around tiles
MAX_COLUMNS = 10  # explanations per grid line; more wrap onto the next line
_FONT, _SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45


def tile_width(image_shape: tuple[int, ...]) -> int:
    """Width of every tile for a photo of this shape."""
    height, width = image_shape[:2]
    return int(np.clip(round(TILE_HEIGHT * width / height), MIN_TILE_WIDTH, MAX_TILE_WIDTH))


def _fit_text(text: str, width: int) -> str:
    """``text``, shortened with '..' to fit ``width`` pixels."""
    while text and cv2.getTextSize(text, _FONT, _SCALE, 1)[0][0] > width:
        text = text[:-3] + ".." if len(text) > 3 else ""
    return text


def titled_tile(image: np.ndarray, lines: Sequence[str], width: int) -> np.ndarray:
    """``image`` resized to ``width`` x TILE_HEIGHT under a white strip with up to two lines."""
    shrink = image.shape[0] > TILE_HEIGHT or image.shape[1] > width
    resized = cv2.resize(image, (width, TILE_HEIGHT),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    tile = np.full((TITLE_HEIGHT + TILE_HEIGHT, width, 3), 255, np.uint8)
    tile[TITLE_HEIGHT:] = resized
    for row, line in enumerate(lines[:2]):
        cv2.putText(tile, _fit_text(line, width - 6), (3, 14 + 17 * row), _FONT, _SCALE,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def arrange(cells: Sequence[Sequence[Optional[np.ndarray]]]) -> np.ndarray:
    """Equal-size tiles (None: blank) in rows, on white, GAP pixels apart and around."""
    height, width = next(c for row in cells for c in row if c is not None).shape[:2]
    columns = max(len(row) for row in cells)
    out = np.full((len(cells) * (height + GAP) + GAP, columns * (width + GAP) + GAP, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is not None:
                top, left = GAP + r * (height + GAP), GAP + c * (width + GAP)
                out[top:top + height, left:left + width] = cell
    return out


def explanation_view(result: ExplainResult, i: int, k: int, image: np.ndarray, alpha: float,
                     as_image: bool, boxes: Sequence[Box] = ()) -> np.ndarray:
    """Target ``k`` of image ``i``: a heatmap overlay, or (``as_image``) the attribution
    rendered as an image (guided backprop); ``boxes`` drawn on it."""
    if as_image:
        view = gradient_image(result.attributions[i, k], result.geometries[i])
    else:
        view = overlay(image, result.heatmaps[i][k], alpha)
    return draw_boxes(view, boxes) if boxes else view


def figure(results: Sequence[ExplainResult], i: int, alpha: float = 0.5,
           as_image: Sequence[bool] = (), boxes: Optional[Sequence[Sequence[Sequence[Box]]]] = None
           ) -> np.ndarray:
    """Image ``i`` and every (method, target) explanation of it, as one RGB grid.

    The shorter of the two dimensions (methods, targets) runs down the rows; each row starts
    with the photo and holds the explanations along the other, at most MAX_COLUMNS per line.
    Titles: the method, then the class name (or index) and its probability.
    ``as_image[m]``: render method m's attributions as images rather than overlays;
    ``boxes[m][k]``: boxes drawn on method m's view of target k.
    """
    image = results[0].images[i]
    width = tile_width(image.shape)
    count = results[0].classes.shape[1]
    views = [[titled_tile(
        explanation_view(result, i, k, image, alpha, bool(as_image[m]) if as_image else False,
                         boxes[m][k] if boxes else ()),
        [result.method, f"{result.label(i, k) or result.classes[i, k]} ({result.probs[i, k]:.2f})"],
        width) for k in range(count)] for m, result in enumerate(results)]
    if len(results) > count:  # one row per target, methods across
        views = [list(column) for column in zip(*views)]
    photo = titled_tile(image, ["input"], width)
    lines = max(1, math.ceil(len(views[0]) / MAX_COLUMNS))
    rows = []
    for row in views:
        for line in range(lines):
            rows.append([photo if line == 0 else None] + row[line * MAX_COLUMNS:(line + 1) * MAX_COLUMNS])
    return arrange(rows)

