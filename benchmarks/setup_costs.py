"""What ``onnxcam bench`` measures besides the contenders' runs: the export of its three ONNX
files (and their sizes), ``import onnxcam``, opening a session, and the float32 arithmetic of a
forward pass and the rate onnxruntime reaches (which set the ratios' ceilings)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

from benchmarks.contenders import CPU
from benchmarks.exports import export_plain
from benchmarks.side_by_side import MB, child_env, timed
from onnxcam.errors import OnnxcamError, first_line

IMPORT_RUNS = 5


def prepare(config: dict, folder: Path) -> tuple[dict[str, str], dict]:
    """Export the three ONNX files (each explain-graph checked against torch, as ``export``
    always does) and save weights and input; returns (paths, export report)."""
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    try:
        model = torchvision.models.get_model(config["model"], weights=None).eval()
    except ValueError as error:
        raise OnnxcamError(f"--model: {first_line(error)}") from None
    size = (config["size"], config["size"])
    files = {name: str(folder / f"{name}.onnx") for name in ("plain", "explain", "guided")}
    files.update(weights=str(folder / "weights.pt"), input=str(folder / "input.npy"))
    torch.save(model.state_dict(), files["weights"])
    x = np.random.default_rng(0).standard_normal((max(config["batches"]), 3, *size), np.float32)
    np.save(files["input"], x)
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        seconds = {  # in this order: the first export also pays for loading torch.onnx
            "explain": timed(lambda: export(model, files["explain"], [config["layer"]], input_size=size)),
            "guided": timed(lambda: export(model, files["guided"], [config["layer"]], input_size=size,
                                           guided=True)),
            "plain": timed(lambda: export_plain(model, torch.randn(2, 3, *size), Path(files["plain"]))),
        }
    sizes = {name: os.path.getsize(files[name]) / MB for name in seconds}
    return files, {"seconds": seconds, "size_mb": sizes, "forward_gflop": forward_gflop(model, size),
                   "size_ratio": {name: sizes[name] / sizes["plain"] for name in ("explain", "guided")}}


def import_time(runs: int = IMPORT_RUNS) -> dict:
    """Median seconds of ``import onnxcam`` and of ``import onnxcam.api.explainer`` (which loads
    onnxruntime) in fresh interpreters, and whether either import pulled in torch."""
    code = ("import sys, time, json; t = time.perf_counter(); import onnxcam; "
            "a = time.perf_counter() - t; torch = 'torch' in sys.modules; import onnxcam.api.explainer; "
            "print(json.dumps([a, time.perf_counter() - t, torch, 'torch' in sys.modules]))")
    samples = [json.loads(subprocess.run([sys.executable, "-c", code], env=child_env(), check=True,
                                         capture_output=True, text=True).stdout)
               for _ in range(runs)]
    return {"onnxcam_s": statistics.median(s[0] for s in samples),
            "explainer_s": statistics.median(s[1] for s in samples),
            "runs": runs, "torch_after_import": any(s[2] for s in samples),
            "torch_after_explainer_import": any(s[3] for s in samples)}


def session_start(files: dict[str, str], runs: int = 3) -> dict:
    """Median seconds to open each explain-graph: optimized at load, and from the optimized
    graph ``cache=True`` saves beside it (the first cached open writes it, untimed)."""
    from onnxcam.runtime.session import open_session

    def median(path: str, cache: bool) -> float:
        return statistics.median(timed(lambda: open_session(path, CPU, cache=cache)) for _ in range(runs))

    report = {}
    for name in ("explain", "guided"):
        open_session(files[name], CPU, cache=True)
        report[name] = {"fresh_s": median(files[name], False), "cached_s": median(files[name], True)}
    return report


def forward_gflop(model, size: tuple[int, int]) -> float:
    """Floating-point operations (a multiply-add counts two) of one image's forward pass, in billions."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 1e9


def matmul_gflops(threads: int, side: int = 2048, runs: int = 10) -> float:
    """onnxruntime's own float32 matrix product rate (GFLOP/s, median of ``runs``) on a
    side×side product with ``threads`` threads: the arithmetic ceiling of its convolutions."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from onnxcam.runtime.session import session_options
    from onnxcam_export.exporter import MAX_IR_VERSION

    square = [side, side]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, square) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, square)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = MAX_IR_VERSION
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads, spinning=False),
                                   providers=CPU)
    feed = {name: np.random.default_rng(0).standard_normal(square, np.float32) for name in ("a", "b")}
    session.run(None, feed)
    seconds = statistics.median(timed(lambda: session.run(None, feed)) for _ in range(runs))
    return 2 * side ** 3 / seconds / 1e9
