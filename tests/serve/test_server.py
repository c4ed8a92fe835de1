"""``onnxcam serve``: the real server in a subprocess on a free loopback port, over HTTP."""
from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as photos

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from benchmarks.serving import Client, Server  # noqa: E402
from onnxcam import Explainer  # noqa: E402
from onnxcam.images.decode import decode_image  # noqa: E402
from onnxcam.render.overlay import encode_png, overlay  # noqa: E402
from support.graphs import make_explain_graph  # noqa: E402
from support.images import png_header_only  # noqa: E402
from support.paths import ROOT  # noqa: E402

ENV = {"PYTHONPATH": str(ROOT)}
MAX_PIXELS = 2_000_000


def _jpeg(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()


@pytest.fixture(scope="module")
def photos_bytes() -> dict[str, bytes]:
    """Real photos at their own sizes, as users send them (PNG and JPEG)."""
    return {"chelsea.png": encode_png(photos.chelsea()), "coffee.jpg": _jpeg(photos.coffee()),
            "rocket.jpg": _jpeg(photos.rocket()), "astronaut.png": encode_png(photos.astronaut())}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A synthetic explain-graph at 224 x 224 (the real pretrained model is in tests/serve/test_page.py)."""
    folder = tmp_path_factory.mktemp("serve")
    return make_explain_graph(folder / "synthetic.onnx", num_classes=8, input_size=(224, 224)).path


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with Server([model, "--max-batch", "8", "--max-wait-ms", "10", "--max-body-mb", "1",
                 "--max-pixels", str(MAX_PIXELS), "--threads", "1"], log, env=ENV) as running:
        yield running


def _check_matches_library(answer: dict, expected) -> None:
    """The JSON answer against the library's ExplainResult for the same image (index 0)."""
    (result,) = expected
    assert [c["class"] for c in answer["classes"]] == result.classes[0].tolist()
    assert [c["label"] for c in answer["classes"]] == [result.label(0, k) for k in range(result.classes.shape[1])]
    np.testing.assert_allclose([c["prob"] for c in answer["classes"]], result.probs[0], atol=1e-6)
    assert len(answer["explanations"]) == result.classes.shape[1]
    for k, entry in enumerate(answer["explanations"]):
        png = base64.b64decode(entry["overlay_png"])
        drawn = decode_image(png)
        np.testing.assert_array_equal(drawn, overlay(result.images[0], result.heatmaps[0][k]))
        assert entry["zero_map"] == bool(result.zero_maps[0, k])


def test_routes_answer(server, photos_bytes):
    client = server.client()
    assert client.request("GET", "/healthz").json() == {"status": "ok", "models": ["synthetic"]}
    described = client.request("GET", "/v1/model").json()
    assert described["labels"] == [f"class_{c}" for c in range(8)] and described["input_size"] == [224, 224]
    assert "gradcam" in described["methods"] and "guided-backprop" not in described["methods"]
    page = client.request("GET", "/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    assets = re.findall(rb'(?:src|href)="([^"]+)"', page.body)
    assert assets and all(not re.match(rb"[a-z]+:|//", asset) for asset in assets), assets
    for asset in assets:
        fetched = client.request("GET", "/" + asset.decode())
        assert fetched.status == 200 and b"http://" not in fetched.body and b"https://" not in fetched.body
    grid = client.explain(photos_bytes["coffee.jpg"], method="gradcam,layercam", top_k=2, format="png")
    assert grid.status == 200 and grid.headers["content-type"] == "image/png"
    assert decode_image(grid.body).shape[0] > 2 * 224  # one row per class, each with its methods
    one = client.explain(photos_bytes["coffee.jpg"], target=3, format="png")
    assert decode_image(one.body).shape == photos.coffee().shape


def test_multipart_upload_boxes_and_raw_map(server, model, photos_bytes):
    answer = server.client().explain(photos_bytes["chelsea.png"], form=True, method="gradcam", target=["2", "5"],
                                     raw="1", boxes="1")
    assert answer.status == 200, answer.body
    body = answer.json()
    library = Explainer(model).explain(photos.chelsea(), targets=[2, 5])
    for k, entry in enumerate(body["explanations"]):
        assert entry["box"] == list(library.boxes(0, k)[0])
        x0, y0, x1, y1 = entry["box"]
        drawn = decode_image(base64.b64decode(entry["overlay_png"]))
        assert (drawn[y0, x0:x1] == 255).all() and (drawn[y0:y1, x1 - 1] == 255).all()  # the box, in white
    plain = server.client().explain(photos_bytes["chelsea.png"], form=True, method="gradcam", target=["2", "5"])
    _check_matches_library(plain.json(), [library])
    assert "box" not in plain.json()["explanations"][0]
    assert (body["width"], body["height"]) == (451, 300)
    np.testing.assert_allclose(np.array(body["explanations"][1]["map"]), library.raw_maps[0, 1], rtol=1e-5)
    assert len(body["predictions"]) == 5 and body["predictions"][0]["prob"] >= body["predictions"][1]["prob"]


def _rss_settled(server: Server) -> float:
    time.sleep(0.3)
    return server.rss_mb()


def test_load_200_requests_from_8_clients(server, model, photos_bytes):
    """All 200 answer 200, each identical to the library's answer for the same image and
    parameters; requests were micro-batched; memory after the run stays within 10 % of the
    memory after warm-up."""
    variants = [{"top_k": 1}, {"top_k": 2}, {"target": 5}, {"method": "gradcam++", "top_k": 1}]
    jobs = [(name, variants[i % len(variants)]) for i, name in
            enumerate(n for _ in range(50) for n in photos_bytes)]
    explainer = Explainer(model)
    expected = {}
    for name in photos_bytes:
        image = decode_image(photos_bytes[name])
        for v, params in enumerate(variants):
            expected[name, v] = [explainer.explain(image, method=params.get("method", "gradcam"),
                                                   targets=params.get("target"), top_k=params.get("top_k", 1))]
    before = server.client().request("GET", "/metrics").body.decode()

    def send(worker: int, share: list) -> list:
        client = Client(server.port)
        return [(name, params, client.explain(photos_bytes[name], **params)) for name, params in share]

    with ThreadPoolExecutor(8) as pool:  # warm-up: every variant, concurrently
        list(pool.map(send, range(8), [jobs[i:i + 4] for i in range(0, 32, 4)]))
    warm = _rss_settled(server)
    with ThreadPoolExecutor(8) as pool:
        answers = [a for part in pool.map(send, range(8), [jobs[i::8] for i in range(8)]) for a in part]
    after = _rss_settled(server)
    assert len(answers) == 200
    for name, params, response in answers:
        assert response.status == 200, response.body[:300]
        _check_matches_library(response.json(), expected[name, variants.index(params)])
    assert after <= warm * 1.10, (warm, after)
    metrics = server.client().request("GET", "/metrics").body.decode()

    def total(text: str, series: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{series} ([0-9.e+]+)$", text, re.M))

    requests = total(metrics, 'onnxcam_requests_total{path="/v1/explain",status="200"}') - total(
        before, 'onnxcam_requests_total{path="/v1/explain",status="200"}')
    images = total(metrics, 'onnxcam_batch_size_sum{model="synthetic"}') - total(
        before, 'onnxcam_batch_size_sum{model="synthetic"}')
    batches = total(metrics, 'onnxcam_batch_size_count{model="synthetic"}') - total(
        before, 'onnxcam_batch_size_count{model="synthetic"}')
    assert requests == images == 232
    assert batches < images  # concurrent requests shared runs
    assert 'onnxcam_request_seconds_bucket{le="0.5",path="/v1/explain"}' in metrics


def _bad_requests(photos_bytes) -> list[tuple[str, dict, int, str]]:
    """(what, request, status, words the error must hold)."""
    png = photos_bytes["chelsea.png"]
    return [
        ("not an image", {"image": b"hello, I am text"}, 415, "not a supported image format"),
        ("truncated", {"image": png[:len(png) // 2]}, 400, "truncated"),
        ("zero bytes", {"image": b""}, 400, "holds no image"),
        ("over --max-pixels", {"image": png_header_only(2000, 1001)}, 413,
         "2000 x 1001 pixels (2.0 megapixels), over the limit of 2 megapixels"),
        ("body over --max-body-mb", {"image": os.urandom(1_200_000)}, 413, "limit of 1 MB"),
        ("unknown method", {"image": png, "method": "gradkam"}, 422, "unknown CAM method 'gradkam'"),
        ("method the file cannot serve", {"image": png, "method": "guided-backprop"}, 422,
         "needs the 'input_gradients' output"),
        ("class out of range", {"image": png, "target": 8}, 422, "class 8 out of range for a model with 8 classes"),
        ("top_k zero", {"image": png, "top_k": 0}, 422, "top_k: must be between 1 and 8, got 0"),
        ("top_k not a number", {"image": png, "top_k": "three"}, 422, "top_k: expected a whole number, got 'three'"),
        ("top_k a list", {"image": png, "top_k": "1,2"}, 422, "top_k: expected a whole number, got '1,2'"),
        ("top_k over the request limit", {"image": png, "top_k": 21}, 422, "top_k: at most 20 classes per request"),
        ("top_k and target", {"image": png, "top_k": 2, "target": 1}, 422, "give top_k or target, not both"),
        ("unknown parameter", {"image": png, "topk": 2}, 422, "topk: unknown parameter"),
        ("unknown format", {"image": png, "format": "gif"}, 422, "format: expected json or png"),
        ("unknown model", {"image": png, "model": "resnet"}, 404, "no model named 'resnet'"),
        ("form without a file", {"form": True}, 422, "expected one file in the form, got 0"),
    ]


def test_bad_input_gets_its_4xx_while_good_requests_keep_succeeding(server, photos_bytes):
    client, good = server.client(), photos_bytes["coffee.jpg"]
    for what, request, status, words in _bad_requests(photos_bytes):
        request = dict(request)
        if request.pop("form", False):
            response = client.request("POST", "/v1/explain", b"--x\r\nContent-Disposition: form-data; "
                                      b'name="top_k"\r\n\r\n1\r\n--x--\r\n',
                                      {"Content-Type": "multipart/form-data; boundary=x"})
        else:
            response = client.explain(request.pop("image"), **request)
        assert response.status == status, (what, response.body[:300])
        assert response.headers["content-type"] == "application/json", what
        error = response.json()
        assert error["status"] == status and words in error["error"], (what, error)
        assert "\n" not in error["error"] and "Traceback" not in error["error"]
        ok = client.explain(good, top_k=1)
        assert ok.status == 200 and ok.json()["classes"], what
    assert client.request("GET", "/v1/explain").status == 405
    assert client.request("GET", "/nowhere").json() == {"error": "GET /nowhere: Not Found", "status": 404}
    assert client.request("GET", "/healthz").status == 200


def test_healthz_answers_while_a_slow_request_runs(server, photos_bytes):
    """onnxruntime and the pixel work run off the event loop: /healthz is not held up."""
    big = cv2.resize(photos.astronaut(), (1400, 1400))  # 2 MP, at the limit
    slow = threading.Thread(target=lambda: Client(server.port).explain(
        encode_png(big), method="scorecam,gradcam,gradcam++,layercam,xgradcam", top_k=5))
    client = server.client()
    slow.start()
    times = []
    while slow.is_alive():
        start = time.perf_counter()
        assert client.request("GET", "/healthz").status == 200
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
    slow.join()
    assert times and max(times) < 0.5, times


def test_sigterm_drains_requests_in_flight_and_exits_0(model, tmp_path, photos_bytes):
    big = encode_png(cv2.resize(photos.astronaut(), (1400, 1400)))
    with Server([model, "--max-batch", "1"], tmp_path / "server.log", env=ENV) as server:
        answered, finished, results = threading.Event(), [], []

        def send():
            response = Client(server.port).explain(big, method="gradcam,layercam", top_k=2)
            results.append(response.status)
            finished.append(time.monotonic())
            answered.set()

        threads = [threading.Thread(target=send) for _ in range(3)]
        for thread in threads:
            thread.start()
        # one answered: with --max-batch 1 the others take turns after it, so they are in flight
        # (a fixed wait let all three finish before the signal on a fast run)
        assert answered.wait(60)
        stopped = time.monotonic()
        code = server.stop()
        for thread in threads:
            thread.join()
    assert code == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert results == [200] * 3
    assert max(finished) > stopped  # answered after the signal: drained, not cut off
    with pytest.raises(ConnectionError):
        Client(server.port).request("GET", "/healthz")


def test_ctrl_c_exits_0_and_several_models_are_served(model, tmp_path, photos_bytes):
    other = make_explain_graph(tmp_path / "other.onnx", num_classes=3, input_size=(64, 64), seed=1).path
    with Server([model, "--model", f"small={other}"], tmp_path / "server.log", env=ENV) as server:
        client = server.client()
        assert client.request("GET", "/healthz").json()["models"] == ["synthetic", "small"]
        assert client.request("GET", "/v1/model?model=small").json()["num_classes"] == 3
        answer = client.explain(photos_bytes["coffee.jpg"], model="small", top_k=3).json()
        assert answer["model"] == "small" and len(answer["classes"]) == 3
        _check_matches_library(answer, [Explainer(other).explain(decode_image(photos_bytes["coffee.jpg"]), top_k=3)])
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(60) == 0


def test_workers_share_the_port_and_add_up_their_metrics(model, tmp_path, photos_bytes):
    with Server([model, "--workers", "2"], tmp_path / "server.log", env=ENV) as server:
        client = server.client()
        for _ in range(4):
            client.close()  # a new connection each time, so both workers may take some
            assert client.explain(photos_bytes["chelsea.png"]).status == 200
        metrics = client.request("GET", "/metrics").body.decode()
        assert re.search(r'^onnxcam_requests_total\{path="/v1/explain",status="200"\} 4.0$', metrics, re.M), metrics
        code = server.stop()
    assert code == 0
    workers = re.findall(r"Started server process \[(\d+)\]", (tmp_path / "server.log").read_text())
    assert len(set(workers)) == 2


def test_serve_command_errors(model, tmp_path, monkeypatch, capsys):
    from onnxcam.cli.main import main

    monkeypatch.chdir(tmp_path)
    for args, words in [(["missing.onnx"], "missing.onnx: no such model file"),
                        ([], "serve: no model given"),
                        ([str(model), "--model", "oops"], "--model: expected NAME=MODEL, got 'oops'"),
                        ([str(model), "--model", f"synthetic={model}"], "the name 'synthetic' is given twice"),
                        ([str(model), "--max-batch", "0"], "--max-batch: must be at least 1, got 0"),
                        ([str(model), "--max-pixels", "-5"], "expected a whole number of pixels, got '-5'")]:
        assert main(["serve", *args]) == 2, args
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("onnxcam: error: ") and words in line, (args, line)


def test_serve_without_the_extra_prints_the_install_hint(tmp_path):
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from onnxcam.cli.main import main; sys.exit(main(['serve', 'model.onnx']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **ENV})
    assert proc.returncode == 2
    assert proc.stderr.strip() == "onnxcam: error: serve needs the uvicorn package: pip install 'onnxcam[serve]'"
    loaded = subprocess.run([sys.executable, "-c", "import sys, onnxcam.cli.main; onnxcam.cli.main.build_parser(); "
                             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "('starlette', 'uvicorn', 'prometheus_client', 'python_multipart')))"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **ENV})
    assert loaded.stdout.strip() == "[]", loaded.stderr
