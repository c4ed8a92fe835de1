"""onnxcam-export: the torch side of onnxcam. Turns a PyTorch classifier into an explain-graph
that the torch-free runtime (``onnxcam``) serves. The only distribution that imports torch; it
does so when ``export`` is first used, so listing the zoo's names stays cheap."""


def __getattr__(name: str):
    if name == "export":
        from onnxcam_export.exporter import export

        return export
    raise AttributeError(f"module 'onnxcam_export' has no attribute {name!r}")


__all__ = ["export"]
