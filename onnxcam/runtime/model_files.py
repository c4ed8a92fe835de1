"""Where explain-graphs live: ``models/NAME.onnx`` in the current folder, so a model exported
by name (``onnxcam export resnet50``) is explained by name (``onnxcam explain resnet50 ...``)."""
from __future__ import annotations

import os
from pathlib import Path

MODELS_DIR = Path("models")


def model_file(name: str) -> Path:
    """``models/NAME.onnx`` for a zoo name; ``timm/x`` and ``module:factory`` become one file name."""
    return MODELS_DIR / f"{name.replace(':', '_').replace('/', '_')}.onnx"


def resolve_model(spec: str | os.PathLike) -> Path:
    """A path as given when that file exists; a bare model name as ``models/NAME.onnx`` when
    that file exists; otherwise the path as given (the caller reports it missing)."""
    path = Path(spec)
    if path.is_file() or path.suffix == ".onnx":
        return path
    named = model_file(str(spec))
    return named if named.is_file() else path
