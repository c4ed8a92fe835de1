"""Explaining a dataset on Ray (onnxcam.distributed.job, `onnxcam explain --ray`): one local Ray with
two CPUs and a capped object store serves the module. The rows equal the local command's
results, an actor killed mid-run loses and repeats no image, and the driver's memory (and the
local streaming path's) stays flat from 200 to 2 000 images."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from onnxcam import Explainer, OnnxcamError
from onnxcam.cli.main import main
from onnxcam.render.boxes import map_boxes
from support.graphs import make_explain_graph, store_box_rules
from support.images import random_rgb, write_image
from support.memory import PEAK_RSS
from support.paths import ROOT
from support.photos import CAT_CLASSES

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from onnxcam.distributed.job import (  # noqa: E402  (needs the ray extra)
    PARQUET_NAME,
    ExplainWorker,
    _pool_shape,
    explain_dataset,
    stream_rows,
)


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray shared by the module's tests; its address for other processes."""
    ray.init(address="local", num_cpus=2, object_store_memory=256 << 20, include_dashboard=False,
             log_to_driver=False, logging_level=logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _variants(photo: np.ndarray) -> list[np.ndarray]:
    """Twelve versions of a photo: itself, resized, cropped, flipped, gray, rotated, stretched."""
    h, w = photo.shape[:2]
    gray = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return [photo, cv2.resize(photo, (w // 2, h // 2)), cv2.resize(photo, (w * 3 // 10, h * 3 // 10)),
            cv2.resize(photo, (64, 64)), photo[h // 5:h * 4 // 5, w // 5:w * 4 // 5],
            photo[:h * 2 // 3, :w * 2 // 3], photo[h // 3:, w // 3:], photo[:, ::-1], gray,
            np.rot90(photo), cv2.resize(photo, (w, h // 2)), photo[:, :h]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[Path], list[Path]]:
    """64 files: 60 versions of five scikit-image photos (PNG and JPEG), one 8x8 thumbnail and
    three corrupt files (truncated JPEG, garbage, empty)."""
    folder = tmp_path_factory.mktemp("photos")
    sources = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee(),
               "astronaut": skimage.data.astronaut(), "rocket": skimage.data.rocket(),
               "motorcycle": skimage.data.stereo_motorcycle()[0]}
    good = [write_image(folder / f"{name}_{v:02d}.{'jpg' if v % 2 else 'png'}", np.ascontiguousarray(image))
            for name, photo in sources.items() for v, image in enumerate(_variants(photo))]
    good.append(write_image(folder / "thumb.png", cv2.resize(sources["coffee"], (8, 8))))
    jpeg = (folder / "chelsea_01.jpg").read_bytes()
    bad = [folder / "truncated.jpg", folder / "garbage.png", folder / "empty.png"]
    bad[0].write_bytes(jpeg[:len(jpeg) // 2])
    bad[1].write_bytes(os.urandom(2000))
    bad[2].write_bytes(b"")
    return folder, sorted(good), bad


def _records(text: str, out: Path) -> dict[str, dict]:
    """JSON lines by image, with the output folder written as OUT."""
    records = [json.loads(line.replace(str(out), "OUT")) for line in text.splitlines()]
    by_image = {record["image"]: record for record in records}
    assert len(by_image) == len(records), "an image printed twice"
    return by_image


def _same_picture(a: Path, b: Path) -> bool:
    """Identical files, or decoded pixels one level apart at most (a float rounding flip)."""
    if a.read_bytes() == b.read_bytes():
        return True
    x, y = (cv2.imread(str(p)).astype(int) for p in (a, b))
    return x.shape == y.shape and int(np.abs(x - y).max()) <= 1


def _near_boxes(row_boxes: list, boxes: list) -> bool:
    """A row's boxes against ``ExplainResult.boxes`` lists: the same largest box, give or take
    the one pixel a map value at the threshold may move."""
    return len(row_boxes) == len(boxes) and all(
        (got is None) == (not want) and (got is None or np.abs(np.subtract(got, want[0])).max() <= 1)
        for got, want in zip(row_boxes, boxes))


def test_ray_command_writes_what_the_local_command_writes(cluster, lite0, photos, tmp_path, capsys):
    folder, good, bad = photos
    model = str(lite0[1])
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    assert main(["explain", model, str(folder), "--top-k", "2", "-o", str(local_out)]) == 1
    local = capsys.readouterr()
    assert main(["explain", model, str(folder), "--top-k", "2", "-o", str(ray_out),
                 "--ray", "--actors", "2"]) == 1
    remote = capsys.readouterr()

    ray_records = _records(remote.out, ray_out)
    assert sorted(ray_records) == sorted(str(p) for p in good)  # each good image exactly once
    assert ray_records == _records(local.out, local_out)
    for path in bad:  # each corrupt one reported once, as the local command reports it
        line = next(line for line in local.err.splitlines() if line.startswith(f"onnxcam: {path}:"))
        assert remote.err.splitlines().count(line) == 1
    assert int(ray_records[str(folder / "chelsea_00.png")]["classes"][0]) in CAT_CLASSES

    written = sorted(p.name for p in ray_out.iterdir())
    assert written == sorted([p.name for p in local_out.iterdir()] + [PARQUET_NAME])
    assert all(_same_picture(local_out / name, ray_out / name) for name in written if name.endswith(".png"))

    rows = pq.read_table(ray_out / PARQUET_NAME).to_pylist()
    assert sorted(row["position"] for row in rows) == list(range(64))
    assert {row["path"] for row in rows if row["error"]} == {str(p) for p in bad}
    expected = Explainer(model).explain(good, top_k=2)
    for i, path in enumerate(good):
        row = next(row for row in rows if row["path"] == str(path))
        assert row["classes"] == expected.classes[i].tolist()
        assert row["labels"] == [expected.label(i, k) for k in range(2)]
        np.testing.assert_allclose(row["probs"], expected.probs[i], rtol=1e-5, atol=1e-6)
        assert row["zero_maps"] == expected.zero_maps[i].tolist()
        assert np.abs(np.array(row["raw_maps"]) - expected.raw_maps[i]).max() <= 1e-5
        assert _near_boxes(row["boxes"], [expected.boxes(i, k) for k in range(2)])
        assert row["grid"] == str(ray_out / f"{path.stem}_grid.png")


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A synthetic explain-graph at 128x128: five classes, 64x64 maps (80 KB of raw maps per
    image at top-5), so rows are large enough that holding them would show in memory."""
    return make_explain_graph(tmp_path_factory.mktemp("wide") / "wide.onnx", input_size=(128, 128))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("small")
    return [write_image(folder / f"{i}.png", random_rgb(128, 96 + i, seed=i)) for i in range(50)]


def _worker_pids() -> dict[str, int]:
    """Actor id -> PID of the live explain actors, from the GCS actor table (the state API
    needs Ray's dashboard, which the test cluster runs without)."""
    from ray._private import state

    return {actor_id: actor["Pid"] for actor_id, actor in state.actors().items()
            if actor["State"] == "ALIVE" and ExplainWorker.__name__ in actor["ActorClassName"]}


def test_killed_actor_is_replaced_and_every_image_comes_once(cluster, wide_model, small_files):
    paths = [small_files[i % len(small_files)] for i in range(600)]
    dataset = explain_dataset(wide_model.path, paths, top_k=5, maps="raw", actors=2)
    positions, rows, killed, after_kill = [], {}, None, 0
    for table in stream_rows(dataset, expected=len(paths)):
        for row in table.select(["position", "error", "classes", "raw_maps"]).to_pylist():
            positions.append(row["position"])
            rows[row["position"]] = row
        if killed is None:
            # The second actor may still be starting on a loaded machine: kill one that works.
            pids = _worker_pids()
            assert 1 <= len(pids) <= 2
            killed = next(iter(pids))
            os.kill(pids[killed], signal.SIGKILL)
        else:
            after_kill += table.num_rows
    from ray._private import state

    assert state.actors()[killed]["NumRestarts"] >= 1  # Ray replaced the killed actor
    assert after_kill >= 400  # and most of the job ran after the kill
    assert sorted(positions) == list(range(len(paths)))  # nothing lost, nothing twice
    assert not any(row["error"] for row in rows.values())
    expected = Explainer(wide_model.path).explain(small_files, top_k=5)
    for position, row in rows.items():
        assert row["classes"] == expected.classes[position % len(small_files)].tolist()
        assert np.abs(np.array(row["raw_maps"]) - expected.raw_maps[position % len(small_files)]).max() <= 1e-5


def test_dataset_of_decoded_images_gives_png_heatmaps_and_boxes(cluster, tmp_path):
    model = make_explain_graph(tmp_path / "m.onnx").path
    images = [random_rgb(30 + 7 * i, 40 + 5 * i, seed=i) for i in range(9)]
    items = [{"path": f"mem://{i}", "image": image} for i, image in enumerate(images)]
    items.append({"path": "mem://bad", "image": np.zeros((4, 4, 4), np.uint8)})
    dataset = explain_dataset(model, ray.data.from_items(items), ["gradcam", "gradcam++"], top_k=2, actors=1)
    rows = {row["path"]: row for table in stream_rows(dataset) for row in table.to_pylist()}
    assert len(rows) == 10 and rows["mem://bad"]["position"] is None
    assert rows["mem://bad"]["error"].startswith("mem://bad: expected an HxWx3 RGB")
    expected = Explainer(model).explain_methods(images, ["gradcam", "gradcam++"], top_k=2)
    for i in range(len(images)):
        row = rows[f"mem://{i}"]
        assert row["error"] is None and row["methods"] == ["gradcam", "gradcam++"]
        assert row["classes"] == expected[0].classes[i].tolist()
        each = [(result, k) for result in expected for k in range(2)]
        for png, (result, k) in zip(row["heatmaps"], each):
            decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED) / 255.0
            assert decoded.shape == images[i].shape[:2]
            assert np.abs(decoded - result.heatmaps[i][k]).max() <= 0.5 / 255 + 1e-6
        assert _near_boxes(row["boxes"], [r.boxes(i, k) for r, k in each])


def test_rows_box_by_the_rule_stored_in_the_model(cluster, tmp_path):
    """A rule fitted by ``evaluate --calibrate-boxes`` lives in the file: Ray's rows use it."""
    model = store_box_rules(make_explain_graph(tmp_path / "m.onnx").path, {"gradcam": "peak:0.9"})
    images = [random_rgb(30 + 7 * i, 40 + 5 * i, seed=i) for i in range(4)]
    items = [{"path": f"mem://{i}", "image": image} for i, image in enumerate(images)]
    rows = {row["path"]: row for table in stream_rows(explain_dataset(model, ray.data.from_items(items), top_k=2,
                                                                      actors=1)) for row in table.to_pylist()}
    expected = Explainer(model).explain(images, top_k=2)
    assert str(expected.box_rule) == "peak:0.9"
    fitted = [[map_boxes(expected.heatmaps[i][k], "peak:0.9") for k in range(2)] for i in range(4)]
    default = [[map_boxes(expected.heatmaps[i][k]) for k in range(2)] for i in range(4)]
    assert fitted != default
    for i in range(4):
        assert _near_boxes(rows[f"mem://{i}"]["boxes"], fitted[i])


def test_stream_keeps_one_row_per_image_and_counts_the_missing(cluster):
    rows = [{"position": i % 5, "path": f"{i % 5}.png", "error": None} for i in range(12)]
    tables = list(stream_rows(ray.data.from_items(rows, override_num_blocks=4), expected=5))
    assert sorted(p for t in tables for p in t["position"].to_pylist()) == [0, 1, 2, 3, 4]
    unnumbered = [{"path": f"{i % 3}.png"} for i in range(7)]
    assert sum(t.num_rows for t in stream_rows(ray.data.from_items(unnumbered))) == 3
    with pytest.raises(OnnxcamError, match="1 of 6 images never came back"):
        list(stream_rows(ray.data.from_items(rows), expected=6))


def test_pool_shares_the_cores(cluster):
    assert _pool_shape(ray, None, None) == (1, 2)
    assert _pool_shape(ray, 2, None) == (2, 1)
    assert _pool_shape(ray, 4, 3) == (4, 3)
    with pytest.raises(OnnxcamError, match="actors: must be at least 1"):
        _pool_shape(ray, 0, None)


DRIVER = PEAK_RSS + """
import json, sys
from onnxcam.distributed.job import ParquetSink, explain_dataset, ray_session, stream_rows
address, model, out, count, *files = sys.argv[1:]
paths = [files[i % len(files)] for i in range(int(count))]
rows = size = 0
with ray_session(address), ParquetSink(out) as sink:
    for table in stream_rows(explain_dataset(model, paths, top_k=5, maps="raw", actors=2), expected=len(paths)):
        sink.add(table)
        rows, size = rows + table.num_rows, size + table.nbytes
print(json.dumps({"rows": rows, "bytes": size, "peak": peak_rss()}))
"""

LOCAL = PEAK_RSS + """
import json, sys
from onnxcam import Explainer
model, count, *files = sys.argv[1:]
paths = [files[i % len(files)] for i in range(int(count))]
rows = size = 0
for part in Explainer(model).explain_iter(paths, top_k=2, batch_size=8):
    boxes = [part.results[0].boxes(i, k) for i in range(len(part.positions)) for k in range(2)]
    rows, size = rows + len(part.positions), size + sum(image.nbytes for image in part.results[0].images)
print(json.dumps({"rows": rows, "bytes": size, "peak": peak_rss()}))
"""


def _peak(script: str, *args) -> dict:
    """Run ``script`` in a fresh Python; its rows, their bytes and its peak RSS."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_driver_memory_is_flat_from_200_to_2000_images(cluster, wide_model, small_files, tmp_path):
    few, many = (_peak(DRIVER, cluster, wide_model.path, tmp_path / f"{n}.parquet", n, *small_files)
                 for n in (200, 2000))
    assert (few["rows"], many["rows"]) == (200, 2000)
    assert many["bytes"] > 0.4 * few["peak"]  # holding the rows would break the bound below, twice over
    assert many["peak"] <= 1.2 * few["peak"], (few, many)
    assert pq.ParquetFile(tmp_path / "2000.parquet").metadata.num_rows == 2000


def test_local_stream_memory_is_flat_from_200_to_2000_images(tmp_path):
    model = make_explain_graph(tmp_path / "m.onnx").path
    files = [write_image(tmp_path / f"{i}.jpg", random_rgb(128, 128, seed=i)) for i in range(50)]
    few, many = (_peak(LOCAL, model, n, *files) for n in (200, 2000))
    assert (few["rows"], many["rows"]) == (200, 2000)
    assert many["bytes"] > 0.4 * few["peak"]  # decoded images held at once would break the bound
    assert many["peak"] <= 1.2 * few["peak"], (few, many)


def test_command_on_a_cluster_address(cluster, tmp_path):
    model = make_explain_graph(tmp_path / "m.onnx").path
    for i in range(5):
        write_image(tmp_path / "in" / f"{i}.png", random_rgb(30, 40 + i, seed=i))
    (tmp_path / "in" / "bad.png").write_bytes(b"nope")
    done = subprocess.run([sys.executable, "-m", "onnxcam", "explain", str(model), "in", "-o", "out",
                           "--ray", cluster, "--actors", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert sorted(json.loads(line)["image"] for line in done.stdout.splitlines()) == [f"in/{i}.png" for i in range(5)]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("onnxcam:")]
    assert line.startswith("onnxcam: in/bad.png: cannot read image (not a supported image format"), line
    assert (tmp_path / "out" / "3_grid.png").is_file()
    assert pq.ParquetFile(tmp_path / "out" / PARQUET_NAME).metadata.num_rows == 6


def test_bad_ray_arguments_are_one_line(tmp_path, capsys):
    model = make_explain_graph(tmp_path / "m.onnx").path
    image = write_image(tmp_path / "a.png", random_rgb(20, 20))
    assert main(["explain", str(model), str(image), "--actors", "2"]) == 2
    assert capsys.readouterr().err == "onnxcam: error: --actors: only with --ray\n"
    with pytest.raises(OnnxcamError, match="maps: expected one of png, raw"):
        explain_dataset(model, [image], maps="jpeg")
    code = ("import sys; sys.modules['ray'] = None\n"
            f"from onnxcam.cli.main import main; sys.exit(main(['explain', {str(model)!r}, {str(image)!r}, '--ray']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "onnxcam: error: --ray: Ray Data is not installed: pip install 'onnxcam[ray]'\n"


def test_a_job_the_workers_cannot_finish_fails_in_one_line(cluster, tmp_path, capsys):
    """An error a worker raises (here: OUT lies under a file) ends the job as the local command
    ends: one line, exit 2."""
    model = make_explain_graph(tmp_path / "m.onnx").path
    image = write_image(tmp_path / "a.png", random_rgb(20, 20))
    (tmp_path / "file").write_text("")
    out = str(tmp_path / "file" / "out")
    assert main(["explain", str(model), str(image), "-o", out]) == 2
    local = capsys.readouterr().err
    assert local == f"onnxcam: error: {out}/a_gradcam_1.png: cannot write (Not a directory)\n"
    assert main(["explain", str(model), str(image), "-o", out, "--ray", "--actors", "1"]) == 2
    assert capsys.readouterr().err == local


def test_int8_graph_on_ray_gives_what_the_local_explainer_gives(cluster, tmp_path):
    """An INT8 explain-graph (QDQ, per-channel) in the Ray job: the same classes and heatmaps."""
    from onnxcam_export.onnx_file import export_onnx_file
    from support.int8_models import photos, quantized_files

    files = quantized_files(tmp_path, 64, forms=("qdq_channel_u8",))
    model = tmp_path / "int8_explain.onnx"
    export_onnx_file(files["qdq_channel_u8"], model)
    images = photos(64)
    items = [{"path": f"mem://{i}", "image": image} for i, image in enumerate(images)]
    rows = {row["path"]: row for table in stream_rows(explain_dataset(model, ray.data.from_items(items), ["gradcam"],
                                                                       actors=1))
            for row in table.to_pylist()}
    expected = Explainer(model).explain(images, "gradcam")
    for i in range(len(images)):
        row = rows[f"mem://{i}"]
        assert row["error"] is None and row["classes"] == expected.classes[i].tolist()
        decoded = cv2.imdecode(np.frombuffer(row["heatmaps"][0], np.uint8), cv2.IMREAD_UNCHANGED) / 255.0
        assert np.abs(decoded - expected.heatmaps[i][0]).max() <= 0.5 / 255 + 1e-6
