"""`onnxcam export` (`onnxcam.cli.export`, served by the `onnxcam_export` distribution through
its entry point) and `onnxcam explain` of what it wrote, as a user runs them, in subprocesses;
without the export side or with a broken PyTorch, one line says what to install."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import skimage.data

from onnxcam.cli.export import export_problem
from support.cli import one_error_line, run_cli
from support.images import random_rgb, write_image
from support.paths import ROOT


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> Path:
    """``onnxcam export resnet50`` with no ``-o``: the file goes to ``models/resnet50.onnx``."""
    folder = tmp_path_factory.mktemp("cli")
    proc = run_cli("export", "resnet50", "--weights", "none", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layers"] == ["layer4"] and report["classes"] == 1000
    assert report["model"] == "models/resnet50.onnx"
    return folder / "models" / "resnet50.onnx"


def test_export_then_explain_by_name_writes_png(resnet50_file):
    """``onnxcam explain resnet50 cat.png`` finds ``models/resnet50.onnx`` by the bare name."""
    folder = resnet50_file.parents[1]
    cv2.imwrite(str(folder / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    proc = run_cli("explain", "resnet50", "cat.png", "--method", "gradcam", "--top-k", "3",
                   "-o", "out", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[0])
    assert len(record["classes"]) == 3 and len(record["overlays"]) == 3
    assert len(record["labels"]) == 3  # torchvision's ImageNet names travel in the file
    png = cv2.imread(str(folder / record["overlays"][0]))
    assert png is not None and png.shape == skimage.data.chelsea().shape


def test_explain_unknown_name_says_how_to_export_it(tmp_path):
    proc = run_cli("explain", "resnet18", "cat.png", cwd=tmp_path)
    one_error_line(proc, "resnet18: no such model file", "models/resnet18.onnx", "onnxcam export resnet18")


def test_export_unknown_model():
    one_error_line(run_cli("export", "no_such_net", "--weights", "none"), "no_such_net")


def test_export_unknown_layer(tmp_path):
    proc = run_cli("export", "resnet18", "--weights", "none", "--layer", "layer9", "-o", str(tmp_path / "r.onnx"))
    one_error_line(proc, "layer9", "layer4")


def test_export_default_weights_offline(tmp_path):
    env = {"TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = run_cli("export", "resnet18", "--weights", "default", "-o", str(tmp_path / "r.onnx"), env=env)
    one_error_line(proc, "--weights", ".pth", "--weights none")


def test_export_missing_weights_file(tmp_path):
    proc = run_cli("export", "resnet18", "--weights", str(tmp_path / "nope.pth"))
    one_error_line(proc, "nope.pth")


def test_export_lists_layers():
    proc = run_cli("export", "resnet18", "--weights", "none", "--layers", "--input-size", "64", "64")
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split("\t") for line in proc.stdout.strip().splitlines())
    assert rows["layer4"] == "[512, 2, 2]" and rows["layer3"] == "[256, 4, 4]"


def test_export_timm_by_name(tmp_path):
    """`timm/NAME` takes timm's preprocessing and last feature stage; the default file is
    models/timm_NAME.onnx, which `info` also finds by the name."""
    proc = run_cli("export", "timm/resnet18", "--weights", "none", "--input-size", "64", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["layers"] == ["layer4"]
    assert (tmp_path / "models" / "timm_resnet18.onnx").is_file()
    info = run_cli("info", "timm/resnet18", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["source"] == "timm:resnet18" and meta["labels"][0] == "tench"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    listed = run_cli("export", "--list").stdout.splitlines()
    assert "timm/resnet18" in listed and "resnet50" in listed


def test_export_timm_errors(tmp_path):
    one_error_line(run_cli("export", "timm/no_such_net", "--weights", "none"), "timm/no_such_net", "no_such_net")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}  # offline, nothing cached
    proc = run_cli("export", "timm/resnet18", "-o", str(tmp_path / "t.onnx"), env=env)
    one_error_line(proc, "--weights default", "resnet18", ".pth", "--weights none")


def test_cli_works_when_torch_is_broken(synthetic, tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
    image = write_image(tmp_path / "i.png", random_rgb(24, 32))
    proc = run_cli("explain", synthetic.path, image, cwd=tmp_path, pythonpath=(fake,))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["overlays"]
    proc = run_cli("export", "--help", cwd=tmp_path, pythonpath=(fake,))
    assert proc.returncode == 2
    assert one_error_line(proc).startswith("onnxcam: error: ")


def test_export_import_problems():
    assert export_problem(ModuleNotFoundError("No module named 'torch'", name="torch")) == \
        "export needs PyTorch: pip install 'onnxcam[export]'"
    assert export_problem(ModuleNotFoundError("x", name="torch.onnx")).startswith("export needs PyTorch")
    assert export_problem(ModuleNotFoundError("x", name="onnxcam_export")) == \
        "export needs the onnxcam_export package: pip install 'onnxcam[export]'"
    assert export_problem(ModuleNotFoundError("x", name="onnxscript.ir")) == \
        "export needs onnxscript: pip install 'onnxcam[export]'"


def test_export_without_the_export_side_prints_the_install_hint(tmp_path):
    """With ``onnxcam_export`` missing, ``onnxcam export`` says how to install it, in one line."""
    code = ("import sys; sys.modules['onnxcam_export'] = None\n"
            "from onnxcam.cli.main import main; sys.exit(main(['export', 'resnet18']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("onnxcam: error: export needs the onnxcam_export package: "
                                   "pip install 'onnxcam[export]'")
