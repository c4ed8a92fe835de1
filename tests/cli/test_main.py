"""The command line's entry (`onnxcam.cli.main`): usage errors in one line, `info`, `bench`, and
a start that imports no torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from onnxcam.cli.main import main
from support.cli import run_cli
from support.paths import ROOT


def test_cli_usage_errors_are_one_line(capsys, synthetic):
    assert main([]) == 2
    assert main(["explain", str(synthetic.path), "x.png", "--top-k", "2", "--target", "1"]) == 2
    assert main(["explain", str(synthetic.path), "x.png", "--method", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("onnxcam: error: ") for line in err)
    assert "not allowed with argument" in err[1] and "unknown CAM method 'nope'" in err[2]


def test_cli_info(capsys, synthetic):
    assert main(["info", str(synthetic.path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == ["feat"] and data["num_classes"] == 5


def test_runtime_imports_no_torch(tmp_path):
    """Importing the runtime and building the parser loads neither torch nor the export side."""
    code = ("import sys, onnxcam, onnxcam.cli.main, onnxcam.api.explainer, onnxcam.images.sources, onnxcam.progress;"
            "onnxcam.cli.main.build_parser(); print(any(m.split('.')[0] in ('torch', 'onnxcam_export') for m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_bench_runs_the_checkouts_benchmark(tmp_path):
    """`onnxcam bench` outside the checkout still finds the checkout's benchmarks/bench.py."""
    proc = run_cli("bench", "--help", cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "usage: onnxcam bench" in proc.stdout
