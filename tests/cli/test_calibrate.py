"""``onnxcam evaluate --calibrate-boxes DIR``: the rule is fitted, stored in the explain-graph's
metadata and then used by ``explain --boxes``, the Python API and the service; bad folders give
one line and leave the model as it was. Ray's use of a stored rule: tests/distributed/test_job.py."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxcam import Explainer
from onnxcam.render.boxes import map_boxes
from support.cli import one_error_line, run_cli
from support.graphs import make_explain_graph, make_plain_model, store_box_rules
from support.images import random_rgb, write_image


@pytest.fixture()
def model(tmp_path) -> Path:
    return make_explain_graph(tmp_path / "model.onnx", negative_class=2, input_size=(48, 64)).path


def annotated(folder: Path, count: int = 4) -> Path:
    """Random photos with a box of class 0 and one of class 'class_3' each."""
    for i in range(count):
        write_image(folder / f"p{i}.png", random_rgb(60, 80, seed=i))
        (folder / f"p{i}.json").write_text(json.dumps({"boxes": [
            {"class": 0, "box": [5, 5, 40, 30]}, {"class": "class_3", "box": [30, 20, 80, 60]}]}))
    return folder


def stored_rules(path: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return json.loads(props["onnxcam"])["box_rules"]


def test_calibration_stores_the_fitted_rule_and_explain_uses_it(model, tmp_path):
    folder = annotated(tmp_path / "boxes")
    done = run_cli("evaluate", model, "--calibrate-boxes", folder, "--method", "gradcam,layercam",
                   "-o", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out" / "calibration.json").read_text())
    rules = stored_rules(model)
    assert set(rules) == {"gradcam", "layercam"}
    for method, entry in report["methods"].items():
        assert rules[method] == entry["rule"] and entry["maps"] == 8
        assert entry["score"] == max(entry["scores"].values())  # the best candidate was stored
        assert f"| {method} | 8 | " in done.stdout and f"| {entry['rule']} |" in done.stdout
    onnx.checker.check_model(onnx.load(str(model)))

    explainer = Explainer(model)
    image = random_rgb(60, 80, seed=9)
    result = explainer.explain(image, targets=[0, 3])
    assert str(result.box_rule) == rules["gradcam"]
    write_image(tmp_path / "q.png", image)
    shown = run_cli("explain", model, tmp_path / "q.png", "--target", "0", "--target", "3", "--boxes",
                    "-o", tmp_path / "ex", cwd=tmp_path)
    listed = json.loads(shown.stdout.splitlines()[0])
    assert listed["boxes"] == [[list(b) for b in map_boxes(result.heatmaps[0][k], rules["gradcam"])] for k in range(2)]


def test_a_stored_rule_changes_the_boxes_of_explain_and_the_api(model, tmp_path):
    image = random_rgb(60, 80, seed=4)
    default = Explainer(model).explain(image, targets=[0, 1, 3, 4])
    store_box_rules(model, {"gradcam": "peak:0.9"})
    result = Explainer(model).explain(image, targets=[0, 1, 3, 4])
    expected = [map_boxes(result.heatmaps[0][k], "peak:0.9") for k in range(4)]
    assert [result.boxes(0, k) for k in range(4)] == expected
    assert expected != [default.boxes(0, k) for k in range(4)]  # the rule matters on these maps
    write_image(tmp_path / "q.png", image)
    for options, rule in (([], "peak:0.9"), (["--box-rule", "otsu"], "otsu"), (["--box-threshold", "0.3"], "peak:0.3")):
        shown = run_cli("explain", model, tmp_path / "q.png", "--target", "0", "--target", "3", "--boxes",
                        *options, "-o", tmp_path / "ex", cwd=tmp_path)
        listed = json.loads(shown.stdout.splitlines()[0])
        assert listed["boxes"] == [[list(b) for b in map_boxes(result.heatmaps[0][k], rule)] for k in (0, 2)]


def test_the_service_uses_the_stored_rule(model, tmp_path):
    pytest.importorskip("starlette")
    from benchmarks.serving import Server
    from onnxcam.render.overlay import encode_png
    from support.paths import ROOT

    store_box_rules(model, {"gradcam": "peak:0.9"})
    image = random_rgb(60, 80, seed=4)
    result = Explainer(model).explain(image, targets=[0, 3])
    with Server([model, "--threads", "1"], tmp_path / "server.log", env={"PYTHONPATH": str(ROOT)}) as server:
        answer = server.client().explain(encode_png(image), form=True, method="gradcam", target=["0", "3"],
                                         boxes="1")
    assert answer.status == 200, answer.body
    for k, entry in enumerate(answer.json()["explanations"]):
        assert entry["box"] == list(map_boxes(result.heatmaps[0][k], "peak:0.9")[0])


@pytest.mark.parametrize("change,message", [
    (lambda d: (d / "p1.json").write_text(json.dumps({"image": "gone.png",
                                                       "boxes": [{"class": 0, "box": [0, 0, 5, 5]}]})),
     "p1.json: names image 'gone.png', which is not in"),
    (lambda d: (d / "p2.json").write_text(json.dumps({"boxes": [{"class": 0, "box": [0, 0, 81, 20]}]})),
     "p2.json: boxes[0]: box [0, 0, 81, 20] lies outside the image (80 x 60 pixels)"),
    (lambda d: (d / "p0.json").write_text(json.dumps({"boxes": [{"class": "zebra", "box": [0, 0, 5, 5]}]})),
     "p0.json: boxes[0]: 'zebra' is not a class of this model"),
    (lambda d: (d / "p3.png").unlink(), "p3.json: no image beside it"),
    (lambda d: (d / "p0.json").write_text("{"), "p0.json: not valid JSON"),
    (lambda d: [p.unlink() for p in d.glob("*.json")], "no boxes files in it"),
])
def test_bad_folders_are_one_line_and_write_nothing(model, tmp_path, change, message):
    folder = annotated(tmp_path / "boxes")
    change(folder)
    before = model.read_bytes()
    failed = run_cli("evaluate", model, "--calibrate-boxes", folder, "-o", tmp_path / "out", cwd=tmp_path)
    one_error_line(failed, "--calibrate-boxes", message)
    assert model.read_bytes() == before and not (tmp_path / "out").exists()
    assert sorted(p.name for p in model.parent.iterdir() if p.name.startswith(".")) == []


def test_bad_calibration_commands_are_one_line(model, tmp_path):
    folder = annotated(tmp_path / "boxes")
    (tmp_path / "empty").mkdir()
    make_plain_model(tmp_path / "plain.onnx")
    for args, message in (
            ([model, "--calibrate-boxes", tmp_path / "empty"], "no boxes files in it"),
            ([model, "--calibrate-boxes", tmp_path / "nowhere"], "no such folder"),
            ([model, folder / "p0.png", "--calibrate-boxes", folder], "drop IMAGES"),
            ([model, "--calibrate-boxes", folder, "--box-rule", "otsu"], "chooses the box rule itself"),
            ([tmp_path / "plain.onnx", "--calibrate-boxes", folder], "not an onnxcam explain-graph"),
            ([model, folder / "p0.png", "--box-rule", "peak:2"], "--box-rule: peak takes a value in (0, 1], got 2"),
            ([model], "give IMAGES, or --boxes DIR")):
        one_error_line(run_cli("evaluate", *args, "-o", tmp_path / "out", cwd=tmp_path), message)


def test_evaluate_scores_a_boxes_folder(model, tmp_path):
    folder = annotated(tmp_path / "boxes")
    done = run_cli("evaluate", model, "--boxes", folder, "--metrics", "localization", "-o", tmp_path / "out",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    gradcam = summary["methods"]["gradcam"]
    assert gradcam["maps"] == 8 and set(gradcam["classes"]) == {"class_0", "class_3"}
    assert 0 <= gradcam["means"]["maxboxacc"] <= 100
    per_class = [gradcam["classes"][c]["pointing"] for c in ("class_0", "class_3")]
    assert np.mean(per_class) == pytest.approx(gradcam["means"]["pointing"])  # four maps each


def test_ray_rows_hold_the_models_rule_only(model, tmp_path):
    write_image(tmp_path / "q.png", random_rgb(60, 80, seed=1))
    for options in (["--box-rule", "otsu"], ["--box-mode", "all"]):
        failed = run_cli("explain", model, tmp_path / "q.png", "--ray", *options, "-o", tmp_path / "ex", cwd=tmp_path)
        one_error_line(failed, "--ray: the parquet rows hold each map's largest box by the model's own rule")


def test_a_corrupt_stored_rule_is_one_line(model, tmp_path):
    store_box_rules(model, {"gradcam": "median"})
    write_image(tmp_path / "q.png", random_rgb(60, 80, seed=1))
    failed = run_cli("explain", model, tmp_path / "q.png", "-o", tmp_path / "ex", cwd=tmp_path)
    one_error_line(failed, "corrupt metadata: box_rules gradcam: box rule: expected peak:F, mass:F or otsu")
