"""What host code costs right after a model run, on this machine.

A small model's explain spends its host time (softmax, map weights, resize, normalization)
right after the graph run. This times one fixed piece of that work, the softmax of one image's
1000 logits, warm (back to back) and after a busy-wait gap of the length of a small model's
run, which touches no NumPy code or data. On a machine whose caches hold code across a few
milliseconds the rows are equal; where they grow with the gap, host code after a run pays for
reloading itself, whatever it does.

    python benchmarks/host_penalty.py [--runs 300]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxcam.runtime.runner import target_scores  # noqa: E402

GAPS_MS = (0.0, 0.5, 1.0, 2.0, 4.0)


def median_us(gap_s: float, runs: int, logits: np.ndarray, classes: np.ndarray) -> float:
    """Median microseconds of one softmax after ``gap_s`` seconds of busy-waiting."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        while time.perf_counter() - start < gap_s:
            pass
        start = time.perf_counter()
        target_scores(logits, classes, "softmax")
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed calls per gap (default 300)")
    args = parser.parse_args()
    logits = np.random.default_rng(0).standard_normal((1, 1000)).astype(np.float32)
    classes = np.zeros((1, 1), np.int64)
    print("| gap before the call | softmax of 1000 logits, µs (median) |\n|---|---|")
    for gap in GAPS_MS:
        print(f"| {gap:g} ms | {median_us(gap / 1e3, args.runs, logits, classes):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
