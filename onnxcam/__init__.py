"""onnxcam: Grad-CAM-style heatmaps from ONNX explain-graphs, run with onnxruntime (no PyTorch).

The path of an image, bottom to top (each layer imports only those below it):
``runtime`` (the explain-graph contract, sessions, runs) -> ``images`` (decoding, geometry) ->
``methods`` (CAM weights, attributions, gradient-free maps) -> ``render`` (overlays, grids,
boxes, files) -> ``api`` (:class:`Explainer`) -> ``metrics`` -> ``cli``, ``serve`` and
``distributed`` on top (the command line above all). ``errors``, ``progress`` and ``quiet`` serve
every layer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from onnxcam.errors import OnnxcamError
from onnxcam.render.overlay import overlay

if TYPE_CHECKING:
    from onnxcam.api.explainer import Explainer, ExplainResult

__version__ = "0.6.0"
__all__ = ["Explainer", "ExplainResult", "OnnxcamError", "overlay", "__version__"]


def __getattr__(name: str):
    """Import the explainer (and onnxruntime) only when it is first used."""
    if name in ("Explainer", "ExplainResult"):
        from onnxcam.api import explainer

        return getattr(explainer, name)
    raise AttributeError(f"module 'onnxcam' has no attribute {name!r}")
