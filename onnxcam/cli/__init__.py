"""The ``onnxcam`` command line: one module a command, the options they share in
:mod:`onnxcam.cli.options`. On top: may import everything in ``onnxcam``; ``export`` comes
from the ``onnxcam_export`` distribution through the ``onnxcam.commands`` entry point.
"""
