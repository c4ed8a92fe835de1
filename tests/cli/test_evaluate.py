"""`onnxcam evaluate` end to end (a subprocess on a small model), its bad inputs, and the
boxes `onnxcam explain` lists and draws."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from onnxcam.images.decode import load_image
from support.cli import one_error_line, run_cli
from support.graphs import make_explain_graph
from support.images import random_rgb, write_image


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The synthetic explain-graph (class 2's map is all zero), in a folder of its own: a test
    here writes its cache beside it."""
    return make_explain_graph(tmp_path_factory.mktemp("m") / "model.onnx", negative_class=2)


@pytest.fixture()
def photos(tmp_path):
    return [write_image(tmp_path / "photos" / f"p{i}.png", random_rgb(30 + 6 * i, 40, seed=i)) for i in range(3)]


def test_evaluate_writes_table_csv_json_and_plot(model, photos, tmp_path):
    boxes = {"p0.png": [[0, 0, 20, 15]], "p1.png": {"class_2": [[5, 5, 40, 30]], "0": [[0, 0, 40, 10]]}}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    proc = run_cli("evaluate", model.path, tmp_path / "photos", "--method", "gradcam,gradcam++",
                   "--boxes", "boxes.json", "--steps", "5", "--percentiles", "20,60", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("| method | maps | drop in confidence % ↓ | increase in confidence % ↑")
    assert "deletion AUC ↓" in lines[0] and "pointing game % ↑" in lines[0] and "ROAD MoRF" in lines[0]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| gradcam", "| gradcam++"]
    with open(tmp_path / "out" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    # p0, p2: the top class; p1: its boxes' classes, in the order given (class 2: an all-zero map)
    assert [(r["image"].rsplit("/", 1)[-1], r["method"], r["class"]) for r in rows if r["method"] == "gradcam"] == [
        ("p0.png", "gradcam", rows[0]["class"]), ("p1.png", "gradcam", "2"), ("p1.png", "gradcam", "0"),
        ("p2.png", "gradcam", rows[-1]["class"])]
    assert len(rows) == 8 and {"road_morf_20", "road_lerf_60", "found"} <= set(rows[0])
    flagged = [r for r in rows if r["zero_map"] == "1"]
    assert len(flagged) == 2 and all(r["class"] == "2" and r["deletion_auc"] == "" for r in flagged)
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["images"] == 3 and summary["options"]["steps"] == 5
    for method, data in summary["methods"].items():
        mine = [r for r in rows if r["method"] == method]
        assert data["maps"] == 4 and data["zero_maps"] == 1
        for name, mean in data["means"].items():
            if name == "maxboxacc":  # a value of the whole set, from the curves (tests/metrics/test_box_rules.py)
                assert name not in rows[0] and data["counts"][name] == data["counts"]["pointing"]
                continue
            values = [float(r[name]) for r in mine if r[name] != ""]
            assert data["counts"][name] == len(values)
            assert mean == pytest.approx(np.mean(values), rel=1e-5, abs=1e-5), name
        assert data["counts"]["pointing"] == 2  # p0 and p1's class 0 have boxes; class 2's map is flagged
        assert len(data["curves"]["deletion"]) == len(data["curves"]["insertion"]) == 6
    plot = load_image(tmp_path / "out" / "curves.png")
    assert plot.shape[1] == 920 and plot.shape[0] > 340 and plot.std() > 10


def test_evaluate_one_bad_image_and_a_box_outside_its_image(model, photos, tmp_path):
    """The other images complete; exit 1; one line per problem."""
    (tmp_path / "photos" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "boxes.json").write_text(json.dumps({"p2.png": [[0, 0, 41, 10]]}))
    proc = run_cli("evaluate", model.path, tmp_path / "photos", "--metrics", "deletion,localization",
                   "--boxes", "boxes.json", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = sorted(proc.stderr.splitlines())
    assert len(errors) == 2
    assert errors[0].startswith(f"onnxcam: {tmp_path / 'photos' / 'bad.png'}: cannot read image")
    assert errors[1] == (f"onnxcam: boxes: {tmp_path / 'photos' / 'p2.png'}: box [0, 0, 41, 10] lies outside "
                         "the image (40 x 42 pixels)")
    with open(tmp_path / "out" / "metrics.csv") as handle:
        assert [r["image"].rsplit("/", 1)[-1] for r in csv.DictReader(handle)] == ["p0.png", "p1.png"]


def test_evaluate_takes_the_session_options_and_pixel_limit_of_explain(model, photos, tmp_path):
    """The options shared with explain: --max-pixels below one photo's size (p2 is 40 x 42)
    fails that photo only, with the limit named; --threads, --no-spinning, --cache are taken."""
    proc = run_cli("evaluate", model.path, tmp_path / "photos", "--metrics", "confidence", "--max-pixels", "1500",
                   "--threads", "1", "--no-spinning", "--cache", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"onnxcam: {photos[2]}: image is 40 x 42 pixels (0.0 megapixels), over the limit of 0.0015 "
        "megapixels (--max-pixels or max_pixels= raises it)"]
    with open(tmp_path / "out" / "metrics.csv") as handle:
        assert [r["image"].rsplit("/", 1)[-1] for r in csv.DictReader(handle)] == ["p0.png", "p1.png"]
    assert any(p.name.endswith(".onnx") and p.name.startswith(".") for p in model.path.parent.iterdir())


@pytest.mark.parametrize("args,boxes,message", [
    (["--metrics", "deletion,nope"], None, "--metrics: unknown metric 'nope' (choose from: confidence, "),
    (["--metrics", "localization"], None, "--metrics: localization needs --boxes"),
    (["--fraction", "1.5"], None, "--fraction: must be in (0, 1), got 1.5"),
    (["--percentiles", "10,x"], None, "--percentiles: expected comma-separated numbers"),
    (["--method", "gradcam,guided-gradcam"], None, "method: guided-gradcam needs the 'input_gradients' output"),
    ([], "{not json", "not valid JSON"),
    ([], '[[0, 0, 1, 1]]', "expected an object of image file name -> boxes"),
    ([], '{"p0.png": [[0, 0, 10]]}', "p0.png: a box is four numbers [x0, y0, x1, y1], got [0, 0, 10]"),
    ([], '{"p0.png": [[10, 0, 5, 8]]}', "p0.png: box [10, 0, 5, 8] must have 0 <= x0 < x1 and 0 <= y0 < y1"),
    ([], '{"p0.png": {"zebra": [[0, 0, 5, 8]]}}', "p0.png: 'zebra' is not a class of this model"),
    ([], '{"p0.png": [0, 0, 5, 8]}', "p0.png: a box is four numbers"),
])
def test_evaluate_bad_input_is_one_line(model, photos, tmp_path, args, boxes, message):
    if boxes is not None:
        (tmp_path / "boxes.json").write_text(boxes)
        args = args + ["--boxes", "boxes.json"]
    proc = run_cli("evaluate", model.path, photos[0], *args, "-o", "out", cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith("onnxcam: error: ") and message in line, line
    assert not (tmp_path / "out").exists()


def test_explain_lists_boxes_and_draws_them_when_asked(model, photos, tmp_path):
    plain = run_cli("explain", model.path, photos[1], "--top-k", "2", "-o", "plain", cwd=tmp_path)
    drawn = run_cli("explain", model.path, photos[1], "--top-k", "2", "--boxes", "--box-threshold", "0.5",
                    "-o", "drawn", cwd=tmp_path)
    assert plain.returncode == drawn.returncode == 0, plain.stderr + drawn.stderr
    listed, shown = json.loads(plain.stdout), json.loads(drawn.stdout)
    assert len(listed["boxes"]) == len(listed["overlays"]) == 2
    for found in (listed["boxes"][0], shown["boxes"][0]):
        (x0, y0, x1, y1), = found
        assert 0 <= x0 < x1 <= 40 and 0 <= y0 < y1 <= 36
    box = shown["boxes"][0][0]
    before = load_image(tmp_path / listed["overlays"][0]).astype(int)
    after = load_image(tmp_path / shown["overlays"][0]).astype(int)
    changed = np.abs(after - before).sum(axis=2) > 0
    assert changed[box[1], box[0]:box[2]].mean() > 0.9  # the top edge is drawn
    assert not changed[box[1] + 3:box[3] - 3, box[0] + 3:box[2] - 3].any()  # the inside is not
    assert changed.sum() < changed.size / 2
    bad = run_cli("explain", model.path, photos[1], "--box-threshold", "0", cwd=tmp_path)
    assert bad.returncode == 2
    assert one_error_line(bad) == "onnxcam: error: --box-threshold: must be in (0, 1], got 0.0"
