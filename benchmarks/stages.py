"""Where a small model's Grad-CAM time goes beyond plain inference, stage by stage: the
explain-graph cut down to the forward pass (logits), then to the raw map, then to the final
heatmap, then whole (every output, as a session runs it), then ``explain`` end to end. Each
contender runs in its own fresh process and they take turns (``side_by_side.interleave``), as
the family benchmark times them.

    python benchmarks/stages.py mobilenet_v3_small [--batch 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.contenders import GRADCAM, PLAIN, Job  # noqa: E402
from benchmarks.exports import export_model  # noqa: E402
from benchmarks.side_by_side import interleave  # noqa: E402
from onnxcam.errors import OnnxcamError  # noqa: E402
from onnxcam.runtime.artifact import (  # noqa: E402
    LOGITS,
    TARGET_INDICES,
    TARGET_PROBS,
    heatmap_name,
    map_name,
    zero_map_name,
)
from onnxcam_export.passes.onnx.graph_edits import drop_unread  # noqa: E402

STAGES = {
    "forward": [LOGITS],
    "raw map": [LOGITS, TARGET_INDICES, map_name("gradcam")],
    "heatmap": [LOGITS, TARGET_INDICES, TARGET_PROBS, heatmap_name("gradcam"), zero_map_name("gradcam")],
}


def cut(source: str, outputs: list[str], path: Path) -> None:
    """Save the explain-graph ``source`` with only ``outputs`` and what computes them."""
    model = onnx.load(source)
    kept = [value for value in model.graph.output if value.name in outputs]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    drop_unread(model.graph, {node.op_type for node in model.graph.node})
    onnx.save(model, str(path))


def stages(name: str, batch: int, rounds: int) -> dict[str, float]:
    """Median milliseconds of each contender (the median of the rounds' medians)."""
    with tempfile.TemporaryDirectory(prefix="onnxcam-stages-") as folder:
        files = export_model(name, Path(folder), batch)["files"]
        graphs = {}
        for stage, outputs in STAGES.items():
            graphs[stage] = str(Path(folder) / f"{stage.replace(' ', '_')}.onnx")
            cut(files["explain"], outputs, Path(graphs[stage]))
        graphs["whole graph"] = files["explain"]
        settings = {"batch": batch, "threads": 2, "repeats": 200, "warmup": 3, "budget": 8.0,
                    "model": name, "layer": "", "spinning": False}
        jobs = {PLAIN: Job(contender=PLAIN, files=files, **settings)}
        jobs.update({stage: Job(contender="explain-graph", files={**files, "explain": graph}, **settings)
                     for stage, graph in graphs.items()})
        jobs["explain"] = Job(contender=GRADCAM, files=files, **settings)
        medians: dict[str, list[float]] = {label: [] for label in jobs}
        for _ in range(rounds):
            for label, result in interleave(jobs, Path(folder)).items():
                if not result["available"]:
                    raise OnnxcamError(f"{label}: {result['reason']}")
                medians[label].append(result["median_ms"])
    return {label: statistics.median(values) for label, values in medians.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo name, e.g. mobilenet_v3_small")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    ms = stages(args.model, args.batch, args.rounds)
    plain = ms[PLAIN]
    previous = plain
    print(f"{args.model} batch {args.batch} ({args.rounds} round(s), medians):")
    for label, value in ms.items():
        print(f"  {label:<17} {value:8.3f} ms  {value / plain:5.3f}× plain  {100 * (value - previous) / plain:+5.1f} %")
        previous = value
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
