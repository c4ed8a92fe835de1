"""What ``onnxcam explain`` writes for one explained image: its overlays, its grid figure and
the JSON record it prints."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from onnxcam.explainer import ExplainResult
from onnxcam.grid import explanation_view, figure
from onnxcam.overlay import save_png


def write_explained(results: Sequence[ExplainResult], i: int, source: str, name: str, out: Path,
                    alpha: float, as_image: Sequence[bool]) -> dict:
    """Write image ``i`` of ``results`` (one per method) as ``OUT/<name>_<method>_<k>.png`` and
    ``OUT/<name>_grid.png``; ``as_image[m]`` draws method m's attributions as an image. Returns
    the image's JSON record."""
    image = results[0].images[i]
    count = results[0].classes.shape[1]
    overlays = [str(save_png(out / f"{name}_{result.method}_{k + 1}.png",
                             explanation_view(result, i, k, image, alpha, flag)))
                for result, flag in zip(results, as_image) for k in range(count)]
    grid = save_png(out / f"{name}_grid.png", figure(results, i, alpha, as_image))
    first = results[0]
    return {
        "image": source,
        "classes": first.classes[i].tolist(),
        "labels": [first.label(i, k) for k in range(count)],
        "probs": [round(float(p), 6) for p in first.probs[i]],
        "methods": [result.method for result in results],
        "overlays": overlays,
        "zero_maps": [flag for result in results for flag in result.zero_maps[i].tolist()],
        "grid": str(grid),
    }
