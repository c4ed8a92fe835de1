"""``onnxcam``: the command line's entry point. Builds the parser from each command's module
and turns every failure into one line and an exit status (0 ok, 1 some images failed, 2 error)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from onnxcam import __version__
from onnxcam.cli import evaluate, explain, export, info, serve
from onnxcam.cli.options import Parser, option_wording
from onnxcam.errors import OnnxcamError, first_line


def _bench(arguments: Sequence[str]) -> int:
    """Run the checkout's ``benchmarks/bench.py`` with ``arguments``."""
    import runpy

    here = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
    script = next((p for p in (Path("benchmarks/bench.py"), here) if p.is_file()), None)
    if script is None:
        raise OnnxcamError("bench: benchmarks/bench.py not found; run it from a source checkout of onnxcam")
    sys.argv = [str(script), *arguments]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def build_parser(with_export: bool = False) -> Parser:
    """The argument parser; ``with_export`` adds the export options (imports PyTorch)."""
    from onnxcam.methods.registry import METHODS

    parser = Parser(prog="onnxcam", description="Grad-CAM heatmaps from ONNX explain-graphs.")
    parser.add_argument("--version", action="version", version=f"onnxcam {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    explain.add_parser(commands, ", ".join(METHODS))
    evaluate.add_parser(commands, ", ".join(METHODS))
    info.add_parser(commands)
    export.add_parser(commands, with_export)
    serve.add_parser(commands)
    # listed for --help only: main() hands every argument after `bench` to benchmarks/bench.py
    commands.add_parser("bench", help="time onnxcam against plain inference and the torch libraries "
                                      "(benchmarks/bench.py of a source checkout; `bench --help` for its options)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some images failed, 2 error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["bench"]:
            return _bench(argv[1:])
        args = build_parser(with_export=argv[:1] == ["export"]).parse_args(argv)
        return args.run(args)
    except OnnxcamError as error:
        print(f"onnxcam: error: {option_wording(str(error))}", file=sys.stderr)
    except KeyboardInterrupt:
        print("onnxcam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:  # never show command-line users a traceback
        print(f"onnxcam: error: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
    return 2
