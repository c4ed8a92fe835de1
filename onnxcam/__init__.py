"""onnxcam: Grad-CAM-style heatmaps from ONNX explain-graphs, run with onnxruntime (no PyTorch)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcam.errors import OnnxcamError
from onnxcam.overlay import overlay

if TYPE_CHECKING:
    from onnxcam.explainer import Explainer, ExplainResult

__version__ = "0.2.0"
__all__ = ["Explainer", "ExplainResult", "OnnxcamError", "overlay", "__version__"]


def __getattr__(name: str):
    """Import the explainer (and onnxruntime) only when it is first used."""
    if name in ("Explainer", "ExplainResult"):
        from onnxcam import explainer

        return getattr(explainer, name)
    raise AttributeError(f"module 'onnxcam' has no attribute {name!r}")
