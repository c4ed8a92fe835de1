"""Torch side of onnxcam: turns a PyTorch classifier into an explain-graph, and the benchmark
that times it against the torch libraries. The only package that imports torch; it does so
when ``export`` is first used, so ``onnxcam.export.bench``'s timing children stay torch-free."""


def __getattr__(name: str):
    if name == "export":
        from onnxcam.export.exporter import export

        return export
    raise AttributeError(f"module 'onnxcam.export' has no attribute {name!r}")


__all__ = ["export"]
