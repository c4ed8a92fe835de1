"""Tests of the torch-free runtime against synthetic explain-graphs (no PyTorch needed)."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from graphs import SyntheticModel, make_explain_graph, make_plain_model

from onnxcam import Explainer, OnnxcamError, overlay
from onnxcam.artifact import FORMAT_VERSION, ArtifactInfo
from onnxcam.cli import _export_problem, main
from onnxcam.explainer import target_matrix
from onnxcam.imageops import Geometry, fit, load_image, preprocess, to_rgb_uint8
from onnxcam.inputs import expand_inputs, output_stems
from onnxcam.methods import CAMMethod, GradCAM, normalize_maps
from onnxcam.overlay import save_png
from onnxcam.progress import Progress
from onnxcam.registry import get_method
from onnxcam.session import ALLOW_SPINNING, cached_graph_path, open_session, select_providers

ROOT = Path(__file__).resolve().parents[1]
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


# ---------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> SyntheticModel:
    return make_explain_graph(tmp_path_factory.mktemp("m") / "model.onnx", negative_class=2)


@pytest.fixture(scope="module")
def explainer(model) -> Explainer:
    return Explainer(model.path, providers=["cpu"])


def batch(n: int, seed: int = 2, size=(24, 32)) -> np.ndarray:
    """Normalized inputs whose top classes differ between images."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3) + size) + rng.normal(0, 2, (n, 3, 1, 1))
    return x.astype(np.float32)


def reference_heatmaps(model: SyntheticModel, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Reference: raw Grad-CAM -> cv2 bilinear resize to the input size -> min-max."""
    raw = model.gradcam(x, classes)
    h, w = x.shape[2:]
    out = np.zeros(raw.shape[:2] + (h, w))
    for i in range(raw.shape[0]):
        for k in range(raw.shape[1]):
            m = cv2.resize(raw[i, k], (w, h), interpolation=cv2.INTER_LINEAR)
            out[i, k] = (m - m.min()) / (m.max() - m.min())
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return path


def run_cli(*args, cwd: Path, pythonpath: tuple = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(ROOT)]))
    return subprocess.run([sys.executable, "-m", "onnxcam", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# ---------------------------------------------------------------- Grad-CAM correctness

def test_gradcam_matches_numpy_reference(model, explainer):
    x = batch(4)
    result = explainer.explain(x, normalized=True)
    ref_logits = model.logits(x)
    assert len(set(ref_logits.argmax(axis=1))) > 1  # the images disagree, so ranks matter
    np.testing.assert_allclose(result.logits, ref_logits, atol=1e-4)
    np.testing.assert_array_equal(result.classes[:, 0], ref_logits.argmax(axis=1))
    np.testing.assert_allclose(result.raw_maps, model.gradcam(x, result.classes), rtol=1e-4, atol=1e-6)
    expected = reference_heatmaps(model, x, result.classes)
    for i in range(4):
        assert result.heatmaps[i].shape == (1, 24, 32)
        assert np.abs(result.heatmaps[i] - expected[i]).max() <= 1e-5
    assert not result.zero_maps.any()
    assert result.images is None


def test_image_file_goes_through_preprocessing(model, explainer, tmp_path):
    rgb = random_rgb(24, 32)  # the input size, so "stretch" is the identity
    path = write_image(tmp_path / "img.png", rgb)
    result = explainer.explain(path)
    info = model.info
    x = ((rgb / 255.0 - np.array(info.mean)) / np.array(info.std)).transpose(2, 0, 1)[None]
    expected = reference_heatmaps(model, x, result.classes)
    assert np.abs(result.heatmaps[0] - expected[0]).max() <= 1e-5
    np.testing.assert_array_equal(result.images[0], rgb)
    assert result.label(0) == f"class_{result.classes[0, 0]}"


def test_negative_targets_are_ranks(model, explainer):
    x = batch(4, seed=3)
    result = explainer.explain(x, normalized=True, targets=[-1, -2, -3])
    ref_logits = model.logits(x)
    np.testing.assert_array_equal(result.classes, np.argsort(-ref_logits, axis=1)[:, :3])
    expected_probs = np.take_along_axis(softmax(ref_logits), result.classes, axis=1)
    np.testing.assert_allclose(result.probs, expected_probs, atol=1e-5)
    same = explainer.explain(x, normalized=True, top_k=3)
    np.testing.assert_array_equal(same.classes, result.classes)


@pytest.mark.parametrize("n", [1, 4])
@pytest.mark.parametrize("k", [1, 3])
def test_batch_and_target_counts_share_one_file(explainer, n, k):
    images = [random_rgb(30 + 7 * i, 20 + 5 * i, seed=i) for i in range(n)]
    result = explainer.explain(images, top_k=k)
    assert result.classes.shape == result.probs.shape == result.zero_maps.shape == (n, k)
    assert result.logits.shape == (n, 5) and result.raw_maps.shape == (n, k, 12, 16)
    for image, heat in zip(images, result.heatmaps):
        assert heat.shape == (k,) + image.shape[:2] and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1 and np.isfinite(heat).all()
    assert len(result) == n


def test_explicit_target_forms(explainer):
    x = batch(3)
    assert (explainer.explain(x, normalized=True, targets=4).classes == 4).all()
    np.testing.assert_array_equal(explainer.explain(x, normalized=True, targets=[1, 3]).classes,
                                  [[1, 3]] * 3)
    per_image = np.array([[0], [1], [-1]])
    classes = explainer.explain(x, normalized=True, targets=per_image).classes
    np.testing.assert_array_equal(classes[:2, 0], [0, 1])


def test_batching_does_not_change_results(explainer):
    images = [random_rgb(20, 20 + i, seed=i) for i in range(7)]
    small = explainer.explain(images, top_k=2, batch_size=3)
    large = explainer.explain(images, top_k=2, batch_size=8)
    np.testing.assert_array_equal(small.classes, large.classes)
    for a, b in zip(small.heatmaps, large.heatmaps):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_zero_map_is_flagged_without_nan(explainer):
    result = explainer.explain(batch(2), normalized=True, targets=[2, -1])
    assert result.zero_maps[:, 0].all() and not result.zero_maps[:, 1].any()
    assert all(np.isfinite(h).all() and (h[0] == 0).all() for h in result.heatmaps)


@pytest.mark.parametrize(("targets", "message"), [
    (1234, "targets: class 1234 out of range for a model with 5 classes"),
    ([0, -6], "targets: class -6 out of range for a model with 5 classes"),
    ("cat", "targets: expected"),
    (np.zeros((2, 1), int), "targets: has 2 rows for 3 images"),
])
def test_bad_targets(targets, message):
    with pytest.raises(OnnxcamError, match=message.replace("[", r"\[")):
        target_matrix(targets, 1, 3, 5)


def test_bad_explain_arguments(explainer):
    with pytest.raises(OnnxcamError, match="method: unknown CAM method 'nope'.*gradcam"):
        explainer.explain(batch(1), normalized=True, method="nope")
    with pytest.raises(OnnxcamError, match=r"normalized=True expected a float32 \[N, 3, 24, 32\]"):
        explainer.explain(np.zeros((1, 3, 8, 8), np.float32), normalized=True)
    with pytest.raises(OnnxcamError, match="pass normalized=True"):
        explainer.explain(batch(1))
    with pytest.raises(OnnxcamError, match=r"images\[1\]: expected an HxWx3"):
        explainer.explain([random_rgb(5, 5), np.zeros((5, 5, 3), np.float32)])
    with pytest.raises(OnnxcamError, match="top_k: must be between 1 and 5"):
        explainer.explain(batch(1), normalized=True, top_k=6)


# ---------------------------------------------------------------- methods and normalization

def test_normalize_maps_flags_constant_maps():
    maps = np.stack([np.full((4, 4), 3.0), np.zeros((4, 4)), np.arange(16.0).reshape(4, 4),
                     np.full((4, 4), np.nan)]).astype(np.float32)
    maps[0, 0, 0] = np.nextafter(np.float32(3.0), np.float32(4.0))  # float32 rounding noise
    normalized, zero = normalize_maps(maps)
    assert zero.tolist() == [True, True, False, True]
    assert np.isfinite(normalized).all() and (normalized[zero] == 0).all()
    assert normalized[2].min() == 0 and normalized[2].max() == 1


def test_pixelwise_weights_and_layer_fusion():
    rng = np.random.default_rng(0)
    acts, grads = rng.random((2, 4, 3, 3)), rng.normal(size=(2, 1, 4, 3, 3))

    class Elementwise(CAMMethod):  # HiResCAM-style pixelwise weights through the same hook
        def weights(self, activations, gradients):
            return gradients

    expected = np.maximum((grads * acts[:, None]).sum(axis=2), 0)
    np.testing.assert_allclose(Elementwise()([(acts, grads)]), expected, rtol=1e-5, atol=1e-6)
    fused = GradCAM()([(acts, grads), (rng.random((2, 4, 6, 6)), rng.normal(size=(2, 1, 4, 6, 6)))])
    assert fused.shape == (2, 1, 6, 6) and 0 <= fused.min() and fused.max() <= 1


def test_get_method():
    assert isinstance(get_method("GradCAM"), GradCAM)
    with pytest.raises(OnnxcamError, match="choose from: gradcam, cam, gradcam[+][+], .*scorecam"):
        get_method("nope")


# ---------------------------------------------------------------- preprocessing and geometry

def crop_info(**kw) -> ArtifactInfo:
    base = dict(layers=["feat"], input_size=(15, 15), mean=[0.5] * 3, std=[0.25] * 3,
                num_classes=5, resize="crop", resize_size=21)
    return ArtifactInfo(**{**base, **kw})


def test_crop_preprocessing_matches_manual_crop():
    image = random_rgb(42, 66)
    tensor, (geometry,) = preprocess([image], crop_info())
    manual = cv2.resize(image, (33, 21), interpolation=cv2.INTER_LINEAR)[3:18, 9:24]
    np.testing.assert_allclose(tensor[0], ((manual / 255.0 - 0.5) / 0.25).transpose(2, 0, 1), atol=1e-6)
    assert geometry == Geometry((42, 66), (21, 33), (3, 9), (15, 15))


def test_crop_geometry_maps_back_to_original():
    _, geometry = fit(random_rgb(42, 66), crop_info())
    centre = np.zeros((15, 15), np.float32)
    centre[7, 7] = 1.0
    back = geometry.to_original(centre)
    assert back.shape == (42, 66)
    ys, xs = np.mgrid[:42, :66]
    centroid = (float((back * ys).sum() / back.sum()), float((back * xs).sum() / back.sum()))
    assert centroid == pytest.approx((20.5, 32.5), abs=0.05)  # the original's centre
    ones = geometry.to_original(np.ones((15, 15), np.float32))
    footprint = np.zeros((42, 66), bool)
    footprint[6:36, 18:48] = True  # the crop covers rows 3..18 and cols 9..24 at scale 1/2
    assert (ones[footprint] == 1).all() and (ones[~footprint] == 0).all()


def test_crop_padding_when_image_too_small():
    tensor, (geometry,) = preprocess([np.full((10, 10, 3), 255, np.uint8)],
                                     crop_info(resize_size=11))
    assert geometry.offset == (-2, -2)
    assert np.allclose(tensor[0, :, 2:13, 2:13], 2.0) and np.allclose(tensor[0, :, 0], -2.0)


def test_stretch_geometry_covers_whole_image(explainer):
    image = random_rgb(50, 70)
    result = explainer.explain(image)
    assert result.heatmaps[0].shape == (1, 50, 70)
    _, geometry = fit(image, explainer.info)
    np.testing.assert_allclose(geometry.to_original(np.ones((24, 32), np.float32)), 1.0)


def test_crop_model_end_to_end(tmp_path):
    model = make_explain_graph(tmp_path / "crop.onnx", input_size=(16, 16), resize="crop",
                               resize_size=20)
    result = Explainer(model.path).explain(random_rgb(40, 60))
    heat = result.heatmaps[0][0]
    assert heat.shape == (40, 60) and (heat[:, :6] == 0).all() and (heat[:, -6:] == 0).all()
    assert heat.max() == pytest.approx(1.0, abs=0.05)


# ---------------------------------------------------------------- image loading

def test_load_image_variants(tmp_path):
    rgb = random_rgb(9, 11)
    np.testing.assert_array_equal(load_image(write_image(tmp_path / "café_图.png", rgb)), rgb)
    gray = rgb[:, :, 0]
    cv2_png = lambda a: cv2.imencode(".png", a)[1].tobytes()  # noqa: E731
    (tmp_path / "gray.png").write_bytes(cv2_png(gray))
    assert (load_image(tmp_path / "gray.png") == gray[:, :, None]).all()
    (tmp_path / "deep.png").write_bytes(cv2_png(gray.astype(np.uint16) * 257))
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png")[:, :, 1], gray)
    bgra = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), np.full((9, 11), 255, np.uint8)])
    bgra[0, 0, 3] = 0
    (tmp_path / "alpha.png").write_bytes(cv2_png(bgra))
    loaded = load_image(tmp_path / "alpha.png")
    assert loaded.shape == (9, 11, 3) and (loaded[0, 0] == 255).all()
    np.testing.assert_array_equal(loaded[1:], rgb[1:])
    assert load_image(write_image(tmp_path / "photo.jpg", rgb)).shape == (9, 11, 3)


def test_load_image_failures(tmp_path):
    png = write_image(tmp_path / "full.png", random_rgb(64, 64)).read_bytes()
    jpg = write_image(tmp_path / "full.jpg", random_rgb(64, 64)).read_bytes()
    thumbnail = b"Exif\0\0\xff\xd8thumbnail\xff\xd9"  # an EXIF thumbnail has its own end marker
    with_exif = jpg[:2] + b"\xff\xe1" + (len(thumbnail) + 2).to_bytes(2, "big") + thumbnail + jpg[2:]
    (tmp_path / "exif.jpg").write_bytes(with_exif)
    assert load_image(tmp_path / "exif.jpg").shape == (64, 64, 3)
    cases = {"cut.png": png[:len(png) // 2], "cut.jpg": jpg[:-200], "x.jpg": b"not an image\n",
             "empty.png": b"", "cut_exif.jpg": with_exif[:-200]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for name, reason in [("cut.png", "truncated"), ("cut.jpg", "truncated"),
                         ("x.jpg", "not a supported image format"), ("empty.png", "empty"),
                         ("cut_exif.jpg", "truncated"), ("missing.png", "no such file")]:
        with pytest.raises(OnnxcamError, match=f"{name}: cannot read image \\({reason}"):
            load_image(tmp_path / name)


def test_to_rgb_uint8():
    assert to_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    for bad in (np.zeros((4, 5, 3)), np.zeros((4, 5, 4), np.uint8), [[1, 2]]):
        with pytest.raises(OnnxcamError, match="img: expected an HxWx3"):
            to_rgb_uint8(bad, "img")


# ---------------------------------------------------------------- sessions and providers

def test_select_providers():
    assert select_providers(None, [CPU]) == [CPU]
    assert select_providers(None, ["AzureExecutionProvider", CUDA, CPU]) == [CUDA, CPU]
    assert select_providers(["cuda", "CPU"], [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(OnnxcamError, match=f"providers: {CUDA} is not available"):
        select_providers([CUDA], [CPU])
    assert CPU in select_providers(None)


def test_io_binding_path_matches_plain_runs(model):
    """The CUDA path (IO binding) exercised on the CPU gives the plain run's outputs; it is
    chosen by default exactly when CUDA is the session's first provider."""
    from onnxcam.runner import GraphRunner

    session, info = open_session(model.path)
    x = np.random.default_rng(3).standard_normal((2, 3, 24, 32)).astype(np.float32)
    targets = np.array([[-1, 2], [0, -2]])
    fetch = ["logits", "target_indices", "gradients/feat"]
    plain = GraphRunner(session, info, model.path)
    bound = GraphRunner(session, info, model.path, io_binding=True)
    assert not plain.io_binding and bound.device == "cpu"
    for a, b in zip(plain.run(fetch, x, targets), bound.run(fetch, x, targets)):
        np.testing.assert_array_equal(a, b)

    class CudaSession:  # what a session on onnxruntime-gpu reports
        def get_providers(self):
            return [CUDA, CPU]

        def get_inputs(self):
            return session.get_inputs()

        def get_outputs(self):
            return session.get_outputs()

    on_gpu = GraphRunner(CudaSession(), info, model.path)
    assert on_gpu.io_binding and on_gpu.device == "cuda"


def test_open_session_errors(tmp_path):
    make_plain_model(tmp_path / "plain.onnx")
    (tmp_path / "junk.onnx").write_text("hello")
    make_explain_graph(tmp_path / "future.onnx", format_version=99)
    make_explain_graph(tmp_path / "corrupt.onnx", metadata="{not json")
    other = make_explain_graph(tmp_path / "other.onnx").info
    other.layers = ["layer4"]
    make_explain_graph(tmp_path / "other.onnx", metadata=other.to_json())
    cases = [("missing.onnx", "no such model file"), ("junk.onnx", "not a valid ONNX model: "),
             ("plain.onnx", "not an onnxcam explain-graph \\(no 'onnxcam' metadata\\); export one"),
             ("future.onnx", f"explain-graph format version 99 is newer than this onnxcam supports \\({FORMAT_VERSION}\\)"),
             ("corrupt.onnx", "corrupt 'onnxcam' metadata \\("),
             ("other.onnx", "broken explain-graph: it lacks 'activations/layer4', 'gradients/layer4'")]
    for name, message in cases:
        for cache in (False, True):
            with pytest.raises(OnnxcamError, match=f"{name}: {message}") as caught:
                open_session(tmp_path / name, cache=cache)
            assert "\n" not in str(caught.value)


def test_open_session_with_threads(model):
    session, info = open_session(model.path, threads=1)
    assert info.layers == ["feat"] and session.get_providers() == [CPU]
    with pytest.raises(OnnxcamError, match="threads: must be at least 1, got 0"):
        open_session(model.path, threads=0)


def test_open_session_spinning_option(model):
    for spinning in (True, False):
        options = open_session(model.path, spinning=spinning)[0].get_session_options()
        for key in ALLOW_SPINNING:
            try:
                value = options.get_session_config_entry(key)
            except RuntimeError:  # unset: onnxruntime's default, spinning
                value = "1"
            assert value == ("1" if spinning else "0")


def test_optimized_graph_cache(tmp_path):
    """The cache is written beside the file, gives the same outputs, is what later sessions
    load (a planted graph shows through), and is rebuilt once the model file is newer."""
    path = make_explain_graph(tmp_path / "m.onnx").path
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 32)).astype(np.float32)
    plain = Explainer(path).explain(x, normalized=True)
    cached = cached_graph_path(path, [CPU])
    assert not cached.exists()
    first = Explainer(path, cache=True).explain(x, normalized=True)
    assert cached.is_file() and cached.parent == path.parent and not list(tmp_path.glob("*.partial"))
    again = Explainer(path, cache=True).explain(x, normalized=True)
    for result in (first, again):
        np.testing.assert_array_equal(result.logits, plain.logits)
        np.testing.assert_array_equal(result.raw_maps, plain.raw_maps)
    make_explain_graph(tmp_path / "planted.onnx", num_classes=7)
    os.replace(tmp_path / "planted.onnx", cached)
    os.utime(cached, (path.stat().st_mtime + 10,) * 2)
    assert open_session(path, cache=True)[1].num_classes == 7  # read from the cache
    os.utime(path, (path.stat().st_mtime + 20,) * 2)  # the model changed since
    assert open_session(path, cache=True)[1].num_classes == 5
    assert open_session(cached)[1].num_classes == 5  # the cache was rebuilt


# ---------------------------------------------------------------- overlay, inputs, progress

def test_overlay_blends_jet_colors(tmp_path):
    image = random_rgb(6, 8)
    np.testing.assert_array_equal(overlay(image, np.zeros((6, 8)), alpha=0.0), image)
    hot = overlay(image, np.ones((3, 4)), alpha=1.0)  # resized to the image
    assert hot.shape == (6, 8, 3) and hot.dtype == np.uint8
    assert (hot[..., 0] > 100).all() and (hot[..., 2] == 0).all()  # JET's top is red, in RGB
    with pytest.raises(OnnxcamError, match="alpha: must be between 0 and 1"):
        overlay(image, np.zeros((6, 8)), alpha=2)
    written = save_png(tmp_path / "new" / "dir" / "o.png", hot)
    np.testing.assert_array_equal(load_image(written), hot)


def test_expand_inputs(tmp_path):
    for name in ["b.png", "a.jpg", "sub/c.JPEG", "sub/notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    files, errors = expand_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "nope.png"),
                                   str(tmp_path / "*.gif"), str(tmp_path / "empty")])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.jpg", "b.png", "sub/c.JPEG"]
    assert errors == [f"{tmp_path / 'nope.png'}: cannot read image (no such file or directory)",
                      f"{tmp_path / '*.gif'}: no files match this pattern",
                      f"{tmp_path / 'empty'}: no images found in this folder"]


def test_output_stems_avoid_collisions(tmp_path):
    paths = [tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg", tmp_path / "dog.png",
             tmp_path / "b" / "Cat.png"]
    assert output_stems(paths) == ["a_cat_jpg", "b_cat_jpg", "dog", "b_Cat_png"]


def test_progress_only_on_terminals():
    quiet = io.StringIO()
    with Progress(10, stream=quiet) as bar:
        bar.update(5)
        bar.message("note")
    assert quiet.getvalue() == "note\n"

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    with Progress(10, stream=tty, width=10) as bar:
        bar.update(5)
    assert "[#####-----] 5/10" in tty.getvalue()
    assert not Progress(3, stream=Terminal()).enabled


# ---------------------------------------------------------------- command line

def test_cli_explain_writes_overlays_and_json(model, tmp_path):
    first = write_image(tmp_path / "a" / "cat.png", random_rgb(30, 40, 1))
    second = write_image(tmp_path / "b" / "cat.png", random_rgb(20, 20, 2))
    proc = run_cli("explain", model.path, first, second, "--top-k", "2", "-o", "out", cwd=tmp_path)
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
def test_cli_bad_image(model, tmp_path, kind):
    path = tmp_path / {"missing": "gone.png", "text": "x.jpg", "truncated": "cut.png"}[kind]
    if kind == "text":
        path.write_text("this is not a JPEG\n")
    elif kind == "truncated":
        data = write_image(path, random_rgb(32, 32)).read_bytes()
        path.write_bytes(data[:len(data) // 2])
    proc = run_cli("explain", model.path, path, cwd=tmp_path)
    line = one_error_line(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    assert line.startswith(f"onnxcam: {path}: cannot read image (")


def test_cli_good_and_bad_image(model, tmp_path):
    good = write_image(tmp_path / "good.png", random_rgb(24, 32))
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    proc = run_cli("explain", model.path, bad, good, "-o", tmp_path / "out", cwd=tmp_path)
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


def test_cli_bad_arguments(model, tmp_path):
    image = write_image(tmp_path / "i.png", random_rgb(8, 8))
    proc = run_cli("explain", model.path, image, "--target", "1234", cwd=tmp_path)
    assert proc.returncode == 2
    assert one_error_line(proc) == ("onnxcam: error: --target: class 1234 out of range for a "
                                    "model with 5 classes")
    assert not (tmp_path / "onnxcam_out").exists()


def test_cli_usage_errors_are_one_line(capsys, model):
    assert main([]) == 2
    assert main(["explain", str(model.path), "x.png", "--top-k", "2", "--target", "1"]) == 2
    assert main(["explain", str(model.path), "x.png", "--method", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("onnxcam: error: ") for line in err)
    assert "not allowed with argument" in err[1] and "unknown CAM method 'nope'" in err[2]


def test_cli_info(capsys, model):
    assert main(["info", str(model.path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == ["feat"] and data["num_classes"] == 5


def test_cli_works_when_torch_is_broken(model, tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch is broken here')\n")
    image = write_image(tmp_path / "i.png", random_rgb(24, 32))
    proc = run_cli("explain", model.path, image, cwd=tmp_path, pythonpath=(fake,))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["overlays"]
    proc = run_cli("export", "--help", cwd=tmp_path, pythonpath=(fake,))
    assert proc.returncode == 2
    assert one_error_line(proc).startswith("onnxcam: error: ")


def test_runtime_imports_no_torch(tmp_path):
    code = ("import sys, onnxcam, onnxcam.cli, onnxcam.explainer, onnxcam.inputs, onnxcam.progress;"
            "onnxcam.cli.build_parser(); print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_export_import_problems():
    assert _export_problem(ModuleNotFoundError("No module named 'torch'", name="torch")) == \
        "export needs PyTorch: pip install 'onnxcam[export]'"
    assert _export_problem(ModuleNotFoundError("x", name="torch.onnx")).startswith("export needs PyTorch")


def test_cli_cache_and_spinning_flags(tmp_path):
    path = make_explain_graph(tmp_path / "m.onnx").path
    cv2.imwrite(str(tmp_path / "a.png"), random_rgb(30, 40))
    for _ in range(2):  # writes the cache, then starts from it
        proc = run_cli("explain", path, tmp_path / "a.png", "--cache", "--no-spinning",
                       "-o", tmp_path / "out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["overlays"]
        assert cached_graph_path(path, [CPU]).is_file()


def test_a_method_kept_by_name_does_not_stand_in_for_one_asked_with_options(explainer):
    plain = explainer.method("rise")
    assert explainer.method(" RISE ") is plain  # checked once, then reused
    asked = explainer.method("rise", samples=7)
    assert asked is not plain and asked.samples == 7 and plain.samples != 7
    assert explainer.method("rise") is plain
