"""Run the onnxcam benchmark from a checkout: ``python benchmarks/bench.py [options]``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from onnxcam.export.bench import add_bench_arguments, run_bench  # noqa: E402
from onnxcam.errors import OnnxcamError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Time onnxcam against plain onnxruntime inference, pytorch-grad-cam and Captum.")
    add_bench_arguments(parser)
    try:
        return run_bench(parser.parse_args())
    except OnnxcamError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
