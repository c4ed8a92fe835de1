"""The Python API: :class:`~onnxcam.api.explainer.Explainer` and its results, and the explainer
of plain classifier files. Imports runtime, images, methods and render.
"""
