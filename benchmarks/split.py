"""Where one zoo model's Grad-CAM time goes, in one process: plain inference, the explain-graph's
run alone, and ``explain`` end to end, alternating so that a noisy spell falls on all three.

The family benchmark runs each contender in its own process, where this VM's medians move by
10–20 % between processes; this split is what a change to the graph or the host side is
measured with. To compare two checkouts of the runtime, run it under each (``PYTHONPATH``).

    python benchmarks/split.py mnasnet0_5 [--batch 8] [--runs 300]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.exports import export_model  # noqa: E402
from onnxcam.api.explainer import Explainer  # noqa: E402
from onnxcam.runtime.artifact import LOGITS, TARGET_INDICES  # noqa: E402
from onnxcam.runtime.session import session_options  # noqa: E402


def split(name: str, batch: int, runs: int) -> dict[str, float]:
    """Median milliseconds of plain inference, the explain-graph run and explain, at ``batch``,
    and the medians of each round's ratios to plain (``graph/plain``, ``explain/plain``), for
    zoo model ``name`` exported with random weights."""
    with tempfile.TemporaryDirectory(prefix="onnxcam-split-") as folder:
        files = export_model(name, Path(folder), batch)["files"]
        return split_files(files["plain"], files["explain"], np.load(files["input"]), runs)


def split_files(plain_path: str, explain_path: str, x: np.ndarray, runs: int) -> dict[str, float]:
    """``split`` of a plain file and its explain-graph on the batch ``x``. The order of the three
    turns each round: a run right after another of the same session finds that session's
    weights in cache, which would favour whichever always came second."""
    batch = len(x)
    plain = onnxruntime.InferenceSession(plain_path, session_options(2, False), providers=["CPUExecutionProvider"])
    explainer = Explainer(explain_path, providers=["CPUExecutionProvider"], threads=2, spinning=False)
    fetch = [LOGITS, TARGET_INDICES, *explainer.method("gradcam").fetch(explainer.info)]
    targets = np.full((batch, 1), -1, np.int64)
    contenders = {
        "plain": lambda: plain.run(None, {plain.get_inputs()[0].name: x}),
        "graph": lambda: explainer.runner.run(fetch, x, targets),
        "explain": lambda: explainer.explain(x, normalized=True, batch_size=batch),
    }
    times: dict[str, list[float]] = {key: [] for key in contenders}
    for run in contenders.values():  # warm-up
        for _ in range(5):
            run()
    keys = list(contenders)
    for round_ in range(runs):
        turn = round_ % len(keys)
        for key in keys[turn:] + keys[:turn]:
            start = time.perf_counter()
            contenders[key]()
            times[key].append(time.perf_counter() - start)
    ms = {key: 1e3 * statistics.median(values) for key, values in times.items()}
    for key in ("graph", "explain"):
        ms[f"{key}/plain"] = statistics.median(a / b for a, b in zip(times[key], times["plain"]))
    return ms


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo name, e.g. mnasnet0_5")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args(argv)
    ms = split(args.model, args.batch, args.runs)
    print(f"{args.model} batch {args.batch}: plain {ms['plain']:.2f} ms, explain-graph run "
          f"{ms['graph']:.2f} ms ({ms['graph/plain']:.3f}×), explain {ms['explain']:.2f} ms "
          f"({ms['explain/plain']:.3f}×); host {ms['explain'] - ms['graph']:.2f} ms "
          "(ratios: medians of each round's)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
