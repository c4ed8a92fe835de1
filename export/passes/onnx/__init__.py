"""Rewrites of the translated ONNX graph (``graph_edits`` holds what they share), run in the
order of :data:`onnxcam_export.passes.ONNX_PASSES`.
"""
