"""The tree keeps its promise: the runtime (``onnxcam``, what ``pip install onnxcam`` installs)
holds no code that imports torch; the torch side is the ``onnxcam_export`` distribution."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCH = {"torch", "torchvision"}


def imported_roots(source: str) -> set[str]:
    """Top-level package of every import statement in ``source``, at any depth (functions too)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            roots.add(str(node.args[0].value).partition(".")[0])
    return roots


def test_import_scan_sees_nested_and_dynamic_imports():
    source = "def f():\n    import torch.nn\nimportlib.import_module('torchvision.models')\nfrom torch import nn"
    assert imported_roots(source) == TORCH


def test_no_runtime_module_imports_torch():
    modules = sorted((ROOT / "onnxcam").rglob("*.py"))
    assert len(modules) > 10
    for module in modules:
        assert not imported_roots(module.read_text()) & TORCH, module


def test_runtime_wheel_holds_no_torch_code(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("onnxcam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        sources = {name: archive.read(name).decode() for name in archive.namelist() if name.endswith(".py")}
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith("METADATA"))
    assert "onnxcam/explainer.py" in sources
    assert all(name.startswith("onnxcam/") for name in sources), sorted(sources)
    for name, source in sources.items():
        assert not imported_roots(source) & TORCH, name
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [line for line in requires if "extra ==" not in line and ("torch" in line or "onnxcam-export" in line)]


def _cli(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_export_without_the_export_side_prints_the_install_hint(tmp_path):
    """With ``onnxcam_export`` missing, ``onnxcam export`` says how to install it, in one line."""
    code = ("import sys; sys.modules['onnxcam_export'] = None\n"
            "from onnxcam.cli import main; sys.exit(main(['export', 'resnet18']))")
    proc = _cli(code, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("onnxcam: error: export needs the onnxcam_export package: "
                                   "pip install 'onnxcam[export]'")


def test_old_import_forwards_to_the_export_side(tmp_path):
    pytest.importorskip("torch")
    from onnxcam.export import export
    from onnxcam_export.exporter import export as moved

    assert export is moved
    proc = _cli("import sys; sys.modules['onnxcam_export'] = None\nfrom onnxcam.export import export", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "ImportError: the exporter is the onnxcam_export package: pip install 'onnxcam[export]'")


def test_bench_runs_the_checkouts_benchmark(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "onnxcam", "bench", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "--quick" in proc.stdout and "usage: onnxcam bench" in proc.stdout
