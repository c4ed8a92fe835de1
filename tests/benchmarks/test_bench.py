"""``onnxcam bench`` (benchmarks/bench.py): its ratios and tables, ``--families``, and a --quick
run end to end."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.bench_report import ratios, ratios_table, results_table
from benchmarks.contenders import CONTENDERS, PLAIN
from benchmarks.setup_costs import forward_gflop
from support.paths import ROOT


def _timed(ms: float, rss: float = 100.0) -> dict:
    return {"available": True, "median_ms": ms, "min_ms": ms, "repeats": 3, "setup_s": 0.1,
            "peak_rss_mb": rss}


def test_onnxcam_bench_families_runs_the_family_benchmark():
    """``onnxcam bench --families ...`` hands the rest to benchmarks/families.py."""
    done = subprocess.run([sys.executable, "-m", "onnxcam", "bench", "--families", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage: onnxcam bench --families") and "--rounds" in done.stdout


def test_ratios_and_tables():
    results = {name: {"1": _timed(10.0)} for name in CONTENDERS}
    results[PLAIN]["1"] = _timed(8.0, rss=50.0)
    results["onnxcam layercam"]["1"] = {"available": False, "reason": "no such method"}
    rows = {row["ratio"]: row for row in ratios(results, [1])}
    assert rows["onnxcam gradcam / plain"]["value"] == pytest.approx(1.25)
    assert rows["onnxcam gradcam / plain"]["ok"] is False
    assert rows["peak RSS onnxcam gradcam / plain"]["value"] == pytest.approx(2.0)
    assert rows["onnxcam layercam / plain"]["value"] is None
    assert rows["onnxcam gradcam++ / plain"]["ok"] is None  # no target
    report = {"config": {"batches": [1]}, "results": results, "ratios": list(rows.values())}
    table = results_table(report)
    assert len(table) == 2 + len(CONTENDERS)
    assert "| onnxcam layercam | n/a | n/a | n/a |" in table
    assert "| onnxcam gradcam | 10.0 | 1.25 | 100 |" in table
    assert "| onnxcam gradcam / plain | 1.25 ✗ | <= 1.1 |" in ratios_table(report)


def test_ceilings_divide_the_peer_by_onnxcams_least_arithmetic():
    """At 1 ms per forward pass and batch 2, a 10 ms peer over gradcam (one pass) can reach at
    most 5×, over guided (forward and input gradients: two passes) 2.5×."""
    results = {name: {"2": _timed(10.0)} for name in CONTENDERS}
    rows = {row["ratio"]: row for row in ratios(results, [2], floor_ms_per_pass=1.0)}
    assert rows["pytorch-grad-cam GradCAM / onnxcam gradcam"]["ceiling"] == pytest.approx(5.0)
    assert rows["captum GuidedGradCam / onnxcam guided-gradcam"]["ceiling"] == pytest.approx(2.5)
    assert rows["onnxcam gradcam / plain"]["ceiling"] is None
    assert rows["peak RSS onnxcam gradcam / plain"]["ceiling"] is None
    report = {"config": {"batches": [2]}, "results": results, "ratios": list(rows.values())}
    assert "| captum GuidedGradCam / onnxcam guided-gradcam | 1.00 ✗ (ceiling 2.5) | >= 3.0 |" \
        in ratios_table(report)


def test_forward_gflop_counts_multiply_adds_twice():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4))
    expected = 2 * (3 * 9 * 8 * 10 * 12) + 2 * 8 * 4  # convolution at 10×12, then the linear head
    assert forward_gflop(model, (10, 12)) * 1e9 == pytest.approx(expected)


@pytest.mark.slow
def test_quick_run(tmp_path):
    path = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick",
                           "--json", str(path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(path.read_text())
    assert set(report["results"]) == set(CONTENDERS)
    for name, by_batch in report["results"].items():
        assert set(by_batch) == {"1", "2"}
        for result in by_batch.values():
            assert result["available"], (name, result)
            assert result["median_ms"] > 0 and result["peak_rss_mb"] > 0
    assert all(row["value"] > 0 for row in report["ratios"])
    assert report["export"]["size_ratio"]["explain"] < 1.05  # weights are not duplicated
    assert report["import"]["torch_after_import"] is False
    assert all(t["fresh_s"] > 0 and t["cached_s"] > 0 for t in report["session_start"].values())
    assert "| onnxcam gradcam |" in done.stdout
    numbers = report["arithmetic"]
    rates = [rate for by_batch in numbers["gflops"].values() for rate in by_batch.values()]
    assert numbers["fastest_gflops"] == max(numbers["matmul_gflops"], *rates) > 0
    assert all(row["value"] <= row["ceiling"] for row in report["ratios"] if row["ceiling"])
    assert all(row["ceiling"] > 0 for row in report["ratios"] if row["ratio"].startswith(("pytorch", "captum")))
