"""What ``onnxcam explain`` writes for one explained image: its overlays, its grid figure and
the JSON record it prints."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from onnxcam.render.boxes import BoxRule
from onnxcam.render.grid import explanation_view, figure
from onnxcam.render.overlay import save_png

if TYPE_CHECKING:  # the results' type only: render never imports the API
    from onnxcam.api.explainer import ExplainResult


def write_explained(results: Sequence[ExplainResult], i: int, source: str, name: str, out: Path,
                    alpha: float, as_image: Sequence[bool], draw_boxes: bool = False,
                    box_rule: Optional[BoxRule] = None, box_mode: str = "largest") -> dict:
    """Write image ``i`` of ``results`` (one per method) as ``OUT/<name>_<method>_<k>.png`` and
    ``OUT/<name>_grid.png``; ``as_image[m]`` draws method m's attributions as an image. Each
    map's weakly-supervised boxes (``ExplainResult.boxes`` with ``box_rule``, None for each
    method's own, and ``box_mode``) go into the record, and with ``draw_boxes`` onto the overlays and the grid.
    Returns the image's JSON record."""
    image = results[0].images[i]
    count = results[0].classes.shape[1]
    boxes = [[result.boxes(i, k, box_rule, box_mode) for k in range(count)] for result in results]
    drawn = boxes if draw_boxes else None
    overlays = [str(save_png(out / f"{name}_{result.method}_{k + 1}.png",
                             explanation_view(result, i, k, image, alpha, flag,
                                              drawn[m][k] if drawn else ())))
                for m, (result, flag) in enumerate(zip(results, as_image)) for k in range(count)]
    grid = save_png(out / f"{name}_grid.png", figure(results, i, alpha, as_image, drawn))
    first = results[0]
    return {
        "image": source,
        "classes": first.classes[i].tolist(),
        "labels": [first.label(i, k) for k in range(count)],
        "probs": [round(float(p), 6) for p in first.probs[i]],
        "methods": [result.method for result in results],
        "overlays": overlays,
        "zero_maps": [flag for result in results for flag in result.zero_maps[i].tolist()],
        "boxes": [[list(box) for box in found] for per_method in boxes for found in per_method],
        "grid": str(grid),
    }
