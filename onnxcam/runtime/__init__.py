"""Running graphs on onnxruntime: the explain-graph contract (names, metadata), sessions and
providers, the main pass and the batched extra passes. The bottom layer: imports only
``onnxcam.errors`` and ``onnxcam.progress``.
"""
