"""``onnxcam export``, served by the ``onnxcam_export`` distribution (it imports PyTorch).

The runtime never imports the exporter: the exporter registers its command under the
``onnxcam.commands`` entry point, and this module loads it only when ``export`` runs. Without
it, the command says in one line how to install it.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import traceback
from importlib.metadata import entry_points

from onnxcam.errors import OnnxcamError, first_line

EXPORT_HINT = "pip install 'onnxcam[export]'"
ENTRY_POINTS = "onnxcam.commands"


def add_parser(commands, with_options: bool) -> None:
    """Register ``export``; ``with_options`` loads the exporter for its options (PyTorch)."""
    export = commands.add_parser("export", help=f"export a PyTorch model or a plain .onnx file (needs {EXPORT_HINT})")
    if with_options:
        command().add_arguments(export)
    export.set_defaults(run=run)


def export_problem(error: ImportError) -> str:
    """A one-line explanation of why the exporter could not be imported."""
    missing = (error.name or "").partition(".")[0]
    frames = traceback.extract_tb(error.__traceback__)
    torch_broken = bool(frames) and f"{os.sep}torch{os.sep}" in frames[-1].filename
    if missing == "torch" or importlib.util.find_spec("torch") is None:
        return f"export needs PyTorch: {EXPORT_HINT}"
    if torch_broken:
        return f"export needs a working PyTorch ({first_line(error)}): {EXPORT_HINT}"
    if missing == "onnxcam_export":
        return f"export needs the onnxcam_export package: {EXPORT_HINT}"
    if missing and missing != "onnxcam":
        return f"export needs {missing}: {EXPORT_HINT}"
    return f"cannot load the exporter: {first_line(error)}"


def command():
    """The exporter's command object (``add_arguments``, ``run``), from its entry point."""
    found = [point for point in entry_points(group=ENTRY_POINTS) if point.name == "export"]
    if not found:
        raise OnnxcamError(f"export needs the onnxcam_export package: {EXPORT_HINT}")
    try:
        return found[0].load()
    except ImportError as error:
        raise OnnxcamError(export_problem(error)) from None


def run(args: argparse.Namespace) -> int:
    try:
        return command().run(args)
    except ImportError as error:
        raise OnnxcamError(export_problem(error)) from None
