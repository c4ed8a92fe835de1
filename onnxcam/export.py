"""``from onnxcam.export import export`` still works: the exporter moved to the ``onnxcam_export``
distribution (built from the repository's ``export/`` folder), which this module forwards to
when it is installed. The runtime itself never imports torch."""
from __future__ import annotations

EXPORT_HINT = "pip install 'onnxcam[export]'"


def __getattr__(name: str):
    if name != "export":
        raise AttributeError(f"module 'onnxcam.export' has no attribute {name!r}")
    try:
        from onnxcam_export import export
    except ModuleNotFoundError as error:
        if error.name != "onnxcam_export":
            raise
        raise ImportError(f"the exporter is the onnxcam_export package: {EXPORT_HINT}") from None
    return export
