"""The explanation methods, one base class (:class:`~onnxcam.methods.base.Method`) and one
family a module: CAM weights from gradients, perturbation CAMs, input-gradient attributions,
gradient-free maps; the registry by name and the map normalization every method shares.
Imports ``onnxcam.runtime`` only.
"""
