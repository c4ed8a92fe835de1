"""`onnxcam export` and `onnxcam explain` as a user runs them, in subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import skimage.data


def onnxcam(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "onnxcam", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory) -> Path:
    """``onnxcam export resnet50`` with no ``-o``: the file goes to ``models/resnet50.onnx``."""
    folder = tmp_path_factory.mktemp("cli")
    proc = onnxcam("export", "resnet50", "--weights", "none", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["layers"] == ["layer4"] and report["classes"] == 1000
    assert report["model"] == "models/resnet50.onnx"
    return folder / "models" / "resnet50.onnx"


def test_export_then_explain_by_name_writes_png(resnet50_file):
    """``onnxcam explain resnet50 cat.png`` finds ``models/resnet50.onnx`` by the bare name."""
    folder = resnet50_file.parents[1]
    cv2.imwrite(str(folder / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    proc = onnxcam("explain", "resnet50", "cat.png", "--method", "gradcam", "--top-k", "3",
                   "-o", "out", cwd=folder)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[0])
    assert len(record["classes"]) == 3 and len(record["overlays"]) == 3
    assert len(record["labels"]) == 3  # torchvision's ImageNet names travel in the file
    png = cv2.imread(str(folder / record["overlays"][0]))
    assert png is not None and png.shape == skimage.data.chelsea().shape


def test_explain_unknown_name_says_how_to_export_it(tmp_path):
    proc = onnxcam("explain", "resnet18", "cat.png", cwd=tmp_path)
    one_line_error(proc, "resnet18: no such model file", "models/resnet18.onnx", "onnxcam export resnet18")


def test_export_unknown_model():
    one_line_error(onnxcam("export", "no_such_net", "--weights", "none"), "no_such_net")


def test_export_unknown_layer(tmp_path):
    proc = onnxcam("export", "resnet18", "--weights", "none", "--layer", "layer9", "-o", str(tmp_path / "r.onnx"))
    one_line_error(proc, "layer9", "layer4")


def test_export_default_weights_offline(tmp_path):
    env = {"TORCH_HOME": str(tmp_path), "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    proc = onnxcam("export", "resnet18", "--weights", "default", "-o", str(tmp_path / "r.onnx"), env=env)
    one_line_error(proc, "--weights", ".pth", "--weights none")


def test_export_missing_weights_file(tmp_path):
    proc = onnxcam("export", "resnet18", "--weights", str(tmp_path / "nope.pth"))
    one_line_error(proc, "nope.pth")


def test_export_lists_layers():
    proc = onnxcam("export", "resnet18", "--weights", "none", "--layers", "--input-size", "64", "64")
    assert proc.returncode == 0, proc.stderr
    rows = dict(line.split("\t") for line in proc.stdout.strip().splitlines())
    assert rows["layer4"] == "[512, 2, 2]" and rows["layer3"] == "[256, 4, 4]"


def test_export_timm_by_name(tmp_path):
    """`timm/NAME` takes timm's preprocessing and last feature stage; the default file is
    models/timm_NAME.onnx, which `info` also finds by the name."""
    proc = onnxcam("export", "timm/resnet18", "--weights", "none", "--input-size", "64", "64", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["layers"] == ["layer4"]
    assert (tmp_path / "models" / "timm_resnet18.onnx").is_file()
    info = onnxcam("info", "timm/resnet18", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["source"] == "timm:resnet18" and meta["labels"][0] == "tench"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    listed = onnxcam("export", "--list").stdout.splitlines()
    assert "timm/resnet18" in listed and "resnet50" in listed


def test_export_timm_errors(tmp_path):
    one_line_error(onnxcam("export", "timm/no_such_net", "--weights", "none"), "timm/no_such_net", "no_such_net")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}  # offline, nothing cached
    proc = onnxcam("export", "timm/resnet18", "-o", str(tmp_path / "t.onnx"), env=env)
    one_line_error(proc, "--weights default", "resnet18", ".pth", "--weights none")
