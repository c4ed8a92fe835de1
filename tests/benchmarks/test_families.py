"""The family benchmark (``onnxcam bench --families``): its rows and table, and one model end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.contenders import GRADCAM, PLAIN, Job
from benchmarks.families import HEAD, combine_rounds, rows, table
from benchmarks.side_by_side import interleave
from support.paths import ROOT


def _timed(ms: float, rss: float) -> dict:
    return {"available": True, "median_ms": ms, "min_ms": ms, "repeats": 3, "setup_s": 0.1, "peak_rss_mb": rss}


def _entry(plain: dict, gradcam: dict, head: dict | None = None, export_s: float = 30.0) -> dict:
    results = {PLAIN: plain, GRADCAM: gradcam, **({HEAD: head} if head else {})}
    return {"size": [224, 224], "export_s": export_s, "results": results}


def test_rows_hold_ratios_against_their_targets():
    plain = {"1": _timed(4.0, 100.0), "8": _timed(30.0, 200.0)}
    edge = _entry(plain, {"1": _timed(4.8, 140.0), "8": _timed(36.0, 320.0)})
    one, eight = rows(edge, "edge")
    assert (one["time_ratio"], one["rss_ratio"]) == pytest.approx((1.2, 1.4))
    assert one["time_ok"] and one["rss_ok"]  # batch 1: within 1.25x and 1.5x
    assert not eight["time_ok"] and not eight["rss_ok"]  # batch 8: 1.2x > 1.15x, 1.6x > 1.5x
    # a fully-connected head: judged against plain inference plus one pass over the head
    vgg = _entry(plain, {"1": _timed(7.0, 100.0), "8": _timed(40.0, 200.0)},
                 head={"1": _timed(2.5, 50.0), "8": _timed(5.0, 60.0)})
    one, eight = rows(vgg, "vgg16")
    assert one["least_ms"] == pytest.approx(6.5) and one["least_ratio"] == pytest.approx(7.0 / 6.5)
    assert one["time_ok"] and not eight["time_ok"]  # 1.08 <= 1.10; 40 / 35 = 1.14 > 1.10


def test_rounds_combine_to_the_median_of_their_medians():
    rounds = [_timed(5.0, 120.0), _timed(9.0, 100.0), _timed(4.0, 110.0)]
    combined = combine_rounds(rounds)
    assert combined["median_ms"] == 5.0 and combined["rounds_ms"] == [5.0, 9.0, 4.0]
    assert combined["peak_rss_mb"] == 110.0 and combined["repeats"] == 9 and combined["min_ms"] == 4.0
    killed = {"available": False, "reason": "failed: killed", "error": True}
    assert combine_rounds([rounds[0], killed]) == killed  # one failed round fails the contender


def test_table_marks_targets_and_lists_failures():
    plain = {"1": _timed(4.0, 100.0)}
    report = {"models": {
        "edge": _entry(plain, {"1": _timed(4.8, 140.0)}, export_s=150.0),
        "broken": {"error": "broken: export failed: op aten.foo has no ONNX translation"},
        "half": _entry(plain, {"1": {"available": False, "reason": "failed: killed", "error": True}})
        | {"error": "onnxcam gradcam batch 1: failed: killed"},
    }}
    lines = table(report)
    assert "| edge | 224 | 1 | 4.0 | 4.8 | 1.20 ✓ | — | 100 | 140 | 1.40 ✓ | 150 ✗ |" in lines
    assert not any(line.startswith("| half |") for line in lines)  # no numbers to show
    assert "- broken: broken: export failed: op aten.foo has no ONNX translation" in lines
    assert "- half: onnxcam gradcam batch 1: failed: killed" in lines


@pytest.mark.slow
def test_families_end_to_end_on_one_model(tmp_path):
    """`onnxcam bench --families --models squeezenet1_1`: exports, times both contenders in
    their own processes, writes the JSON and prints the table (about 2 minutes)."""
    path = tmp_path / "families.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--families",
                           "--models", "squeezenet1_1", "--batches", "1", "2", "--repeats", "3",
                           "--warmup", "1", "--budget", "1", "--rounds", "2", "--json", str(path)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    entry = json.loads(path.read_text())["models"]["squeezenet1_1"]
    assert entry["size"] == [224, 224] and entry["export_s"] > 0 and "error" not in entry
    for contender in (PLAIN, GRADCAM):
        assert set(entry["results"][contender]) == {"1", "2"}
        assert all(r["available"] and r["median_ms"] > 0 and r["peak_rss_mb"] > 0
                   and len(r["rounds_ms"]) == 2 and min(r["rounds_ms"]) <= r["median_ms"] <= max(r["rounds_ms"])
                   for r in entry["results"][contender].values())
    assert sum(line.startswith("| squeezenet1_1 | 224 |") for line in done.stdout.splitlines()) == 2
    assert "- slowest export: squeezenet1_1" in done.stdout


def test_contenders_take_turns_in_their_own_processes_and_a_failure_is_reported(tmp_path):
    """``interleave`` on a tiny graph: every contender gets its runs in turns of one run (the
    turn shorter than a run), from its own process; one whose file is missing, or whose runs
    fail, fails alone."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9),
              tmp_path / "plain.onnx")
    np.save(tmp_path / "input.npy", np.ones((2, 4), np.float32))
    files = {"plain": str(tmp_path / "plain.onnx"), "input": str(tmp_path / "input.npy")}

    def job(**changes) -> Job:
        return Job(**{"contender": PLAIN, "batch": 2, "threads": 1, "repeats": 5, "warmup": 1,
                      "budget": 10.0, "model": "relu", "layer": "", "spinning": False, "files": files,
                      **changes})

    np.save(tmp_path / "wide.npy", np.ones((2, 5), np.float32))
    results = interleave({"a": job(), "b": job(repeats=3),
                          "missing": job(files={**files, "plain": str(tmp_path / "none.onnx")}),
                          "bad input": job(files={**files, "input": str(tmp_path / "wide.npy")})},
                         tmp_path, turn_s=0.0)
    assert results["a"]["repeats"] == results["a"]["turns"] == 5
    assert results["b"]["repeats"] == results["b"]["turns"] == 3
    assert all(results[k]["available"] and results[k]["peak_rss_mb"] > 0 for k in "ab")
    assert not results["missing"]["available"] and "none.onnx" in results["missing"]["reason"]
    # set up, then dead at its first run: its own stderr names why
    assert not results["bad input"]["available"] and "dimensions" in results["bad input"]["reason"]
