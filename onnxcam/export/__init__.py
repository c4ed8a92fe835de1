"""Torch side of onnxcam: turns a PyTorch classifier into an explain-graph. Needs torch."""
from onnxcam.export.exporter import export

__all__ = ["export"]
