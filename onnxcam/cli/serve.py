"""``onnxcam serve``: its options. The service itself (:mod:`onnxcam.serve.server`) loads the
``serve`` extra only when the command runs."""
from __future__ import annotations

import argparse

from onnxcam.cli.options import add_session_arguments

INSTALL_HINT = "pip install 'onnxcam[serve]'"


def add_parser(commands) -> None:
    """Register ``serve``."""
    parser = commands.add_parser("serve", usage="%(prog)s [options] [MODEL] [--model NAME=MODEL ...]", help=f"explain images over HTTP, with a page for people (needs {INSTALL_HINT})")
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="explain-graph .onnx file, or a NAME exported to models/NAME.onnx")
    parser.add_argument("--model", dest="models", action="append", default=[], metavar="NAME=MODEL",
                        help="serve another model under NAME (repeatable); requests choose it with model=NAME")
    server = parser.add_argument_group("server")
    server.add_argument("--host", metavar="ADDRESS", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    server.add_argument("--port", metavar="N", type=int, default=8000, help="port (default 8000)")
    server.add_argument("--workers", metavar="N", type=int, default=1,
                        help="worker processes, each with its own copy of the models (default 1)")
    server.add_argument("--no-access-log", action="store_true", help="do not log every request")
    batching = parser.add_argument_group("batching and limits")
    batching.add_argument("--max-batch", metavar="N", type=int, default=8,
                          help="most images gathered into one onnxruntime run (default 8; 1 = no batching)")
    batching.add_argument("--max-wait-ms", metavar="MS", type=float, default=10.0,
                          help="longest a request waits for others to join its batch (default 10)")
    batching.add_argument("--max-body-mb", metavar="MB", type=float, default=20.0,
                          help="largest request body accepted, in MB (default 20)")
    batching.add_argument("--png-level", type=int, default=0, choices=range(10), metavar="0-9",
                          help="zlib level of the PNG answers (default 0: uncompressed, the least CPU)")
    add_session_arguments(parser, spinning=False, cache=False)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from onnxcam.serve.server import run as serve

    return serve(args, INSTALL_HINT)
