"""The ONNX files the benchmarks time: a model alone, exported as the explain-graph is (the plain
baseline), and a zoo model's explain-graph beside its plain file. ``python -m benchmarks.exports
NAME FOLDER BATCH RESULT`` exports one zoo model in a fresh interpreter (whose memory is
returned when it exits) and writes ``export_model``'s report to RESULT.
"""
from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from onnxcam_export.exporter import export_plain  # noqa: F401  (the benchmarks' plain baseline)

HEAD_FAMILIES = ("vgg", "alexnet")  # a large fully-connected head: its own file, timed apart


def _head(model):
    """Pooling, flatten and classifier of a VGG or AlexNet: the layers after ``features``."""
    import torch

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.avgpool, self.classifier = model.avgpool, model.classifier

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(x), 1))

    return Head().eval()


def export_model(name: str, folder: Path, batch: int) -> dict:
    """Export zoo model ``name`` with random weights (seed 0) at its recipe's size as an
    explain-graph (timed, as ``onnxcam export NAME --weights none`` does it) and plainly, save a
    normalized input of ``batch`` images; for head families also the head and its input."""
    import torch

    from onnxcam_export import export, models

    recipe = models.recipe(name)
    torch.manual_seed(0)
    model = recipe.build("none").eval()
    size = tuple(recipe.input_size)
    files = {"explain": str(folder / "explain.onnx"), "plain": str(folder / "plain.onnx"),
             "input": str(folder / "input.npy")}
    np.save(files["input"], np.random.default_rng(0).standard_normal((batch, 3, *size), np.float32))
    layouts = {layer: recipe.layout for layer in recipe.layers or []} if recipe.layout else None
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        info = export(model, files["explain"], recipe.layers, input_size=size, mean=recipe.mean,
                      std=recipe.std, source=recipe.source, layouts=layouts)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        export_plain(model, torch.randn(2, 3, *size), Path(files["plain"]))
        plain_seconds = time.perf_counter() - start
        if name.startswith(HEAD_FAMILIES):
            with torch.no_grad():
                features = model.features(torch.zeros(1, 3, *size))
            files.update(head=str(folder / "head.onnx"), head_input=str(folder / "head_input.npy"))
            np.save(files["head_input"], np.random.default_rng(1).standard_normal(
                (batch, *features.shape[1:]), np.float32))
            export_plain(_head(model), torch.randn(2, *features.shape[1:]), Path(files["head"]))
    return {"files": files, "size": list(size), "layers": info.layers, "export_s": seconds,
            "plain_export_s": plain_seconds}


def main(argv: list[str]) -> int:
    """``NAME FOLDER BATCH RESULT``: export one zoo model, write its report to RESULT."""
    name, folder, batch, result = argv
    Path(result).write_text(json.dumps(export_model(name, Path(folder), int(batch))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
