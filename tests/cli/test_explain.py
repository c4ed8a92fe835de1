"""`onnxcam explain` as a user runs it (subprocesses): overlays and JSON lines, one line per bad
image or bad argument, the cache and spinning flags."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
import skimage.data

from onnxcam.images.decode import load_image
from onnxcam.runtime.session import cached_graph_path
from support.cli import one_error_line, run_cli
from support.graphs import make_explain_graph, make_plain_model
from support.images import random_rgb, write_image
from support.plain_models import tiny_classifier

CPU = "CPUExecutionProvider"
SIZE = 24


def test_cli_explain_writes_overlays_and_json(synthetic, tmp_path):
    first = write_image(tmp_path / "a" / "cat.png", random_rgb(30, 40, 1))
    second = write_image(tmp_path / "b" / "cat.png", random_rgb(20, 20, 2))
    proc = run_cli("explain", synthetic.path, first, second, "--top-k", "2", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"] for r in records] == [str(first), str(second)]
    for record in records:
        assert len(record["classes"]) == len(record["probs"]) == len(record["overlays"]) == 2
        assert record["labels"] == [f"class_{c}" for c in record["classes"]]
        assert record["zero_maps"] == [False, False]
        for path in record["overlays"]:
            assert (tmp_path / path).is_file()
    assert Path(records[0]["overlays"][0]).name == "a_cat_png_gradcam_1.png"
    assert load_image(tmp_path / records[0]["overlays"][0]).shape == (30, 40, 3)


@pytest.mark.parametrize("kind", ["missing", "text", "truncated"])
def test_cli_bad_image(synthetic, tmp_path, kind):
    path = tmp_path / {"missing": "gone.png", "text": "x.jpg", "truncated": "cut.png"}[kind]
    if kind == "text":
        path.write_text("this is not a JPEG\n")
    elif kind == "truncated":
        data = write_image(path, random_rgb(32, 32)).read_bytes()
        path.write_bytes(data[:len(data) // 2])
    proc = run_cli("explain", synthetic.path, path, cwd=tmp_path)
    line = one_error_line(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    assert line.startswith(f"onnxcam: {path}: cannot read image (")


def test_cli_good_and_bad_image(synthetic, tmp_path):
    good = write_image(tmp_path / "good.png", random_rgb(24, 32))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    proc = run_cli("explain", synthetic.path, bad, good, "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1
    assert one_error_line(proc).startswith(f"onnxcam: {bad}: cannot read image")
    assert (tmp_path / "out" / "good_gradcam_1.png").is_file()
    assert json.loads(proc.stdout)["image"] == str(good)


def test_cli_bad_models(tmp_path):
    image = write_image(tmp_path / "i.png", random_rgb(8, 8))
    make_plain_model(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_text("not onnx")
    for name, message in [("plain.onnx", "not an onnxcam explain-graph"),
                          ("junk.onnx", "not a valid ONNX model"), ("none.onnx", "no such model file")]:
        proc = run_cli("explain", tmp_path / name, image, cwd=tmp_path)
        assert proc.returncode == 2
        assert one_error_line(proc).startswith(f"onnxcam: error: {tmp_path / name}: {message}")


def test_cli_bad_arguments(synthetic, tmp_path):
    image = write_image(tmp_path / "i.png", random_rgb(8, 8))
    proc = run_cli("explain", synthetic.path, image, "--target", "1234", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == ("onnxcam: error: --target: class 1234 out of range for a "
                                    "model with 5 classes")
    assert not (tmp_path / "onnxcam_out").exists()


def test_cli_cache_and_spinning_flags(tmp_path):
    path = make_explain_graph(tmp_path / "m.onnx").path
    cv2.imwrite(str(tmp_path / "a.png"), random_rgb(30, 40))
    for _ in range(2):  # writes the cache, then starts from it
        proc = run_cli("explain", path, tmp_path / "a.png", "--cache", "--no-spinning",
                       "-o", tmp_path / "out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["overlays"]
        assert cached_graph_path(path, [CPU]).is_file()


def test_cli_explains_a_plain_file(tmp_path):
    """`onnxcam explain plain.onnx img --method rise,occlusion` with the preprocessing on the
    command line writes overlays and the grid; a gradient method is one error line."""
    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE, layout="NHWC", softmax=True)
    cv2.imwrite(str(tmp_path / "cat.png"), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\ne\n")
    proc = run_cli("explain", path, "cat.png", "--method", "rise,occlusion", "--samples", "32",
                   "--channels", "bgr", "--scale", "255", "--mean", "104", "117", "123", "--std", "1", "1", "1",
                   "--labels", "labels.txt", "--top-k", "2", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[0])
    assert record["methods"] == ["rise", "occlusion"] and len(record["overlays"]) == 4
    assert set(record["labels"]) <= set("abcde") and abs(sum(record["probs"])) <= 1.0
    overlay = cv2.imread(str(tmp_path / record["overlays"][0]))
    assert overlay.shape == skimage.data.chelsea().shape
    one_error_line(run_cli("explain", path, "cat.png", "--method", "gradcam", cwd=tmp_path),
                   "gradcam needs an explain-graph", "onnxcam export")
    one_error_line(run_cli("explain", path, "cat.png", "--method", "rise", "--layout", "nchw", cwd=tmp_path),
                   "has 24 channels")
