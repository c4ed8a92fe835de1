"""``onnxcam info``: an explain-graph's metadata as JSON."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from onnxcam.cli.options import provider_list


def add_parser(commands) -> None:
    """Register ``info``."""
    info = commands.add_parser("info", help="print an explain-graph's metadata as JSON")
    info.add_argument("model", metavar="MODEL", help="explain-graph .onnx file, or a NAME under models/")
    info.add_argument("--providers", metavar="LIST", help="comma-separated onnxruntime providers, e.g. cuda,cpu")
    info.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from onnxcam.runtime.session import open_session

    session, info = open_session(args.model, provider_list(args.providers))
    print(json.dumps({"model": str(args.model), "providers": session.get_providers(), **asdict(info)},
                     indent=2))
    return 0
