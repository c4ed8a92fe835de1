"""Image sizes read from file headers, and the pixel limit that the CLI, the Python API and
the service apply before decoding."""
from __future__ import annotations

import io
import struct
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from onnxcam.errors import OnnxcamError
from onnxcam.images.decode import DEFAULT_MAX_PIXELS, ImageTooLarge, UnsupportedImage, decode_image, load_image
from onnxcam.images.header_size import image_size
from onnxcam.render.overlay import encode_png, save_png
from support.cli import run_cli
from support.graphs import make_explain_graph
from support.images import png_header_only

WIDTH, HEIGHT = 53, 37


def _pil(fmt: str, **options) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, fmt, **options)
    return out.getvalue()


def _opencv(extension: str, channels: int = 3) -> bytes:
    rgb = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, channels), np.uint8)
    return cv2.imencode(extension, rgb if channels == 3 else rgb[:, :, 0])[1].tobytes()


def _big_endian_tiff() -> bytes:
    """A minimal big-endian ("MM") TIFF header with SHORT width and LONG height."""
    entries = struct.pack(">HHII", 256, 3, 1, WIDTH << 16) + struct.pack(">HHII", 257, 4, 1, HEIGHT)
    return b"MM\0*" + struct.pack(">I", 8) + struct.pack(">H", 2) + entries + b"\0\0\0\0"


@pytest.mark.parametrize("data", [
    pytest.param(_opencv(".png"), id="png"), pytest.param(_opencv(".jpg"), id="jpeg"),
    pytest.param(_pil("JPEG", progressive=True), id="progressive-jpeg"),
    pytest.param(_opencv(".bmp"), id="bmp"), pytest.param(_pil("BMP"), id="pil-bmp"),
    pytest.param(_pil("GIF"), id="gif"), pytest.param(_opencv(".webp"), id="webp-lossy"),
    pytest.param(_pil("WEBP", lossless=True), id="webp-lossless"),
    pytest.param(_pil("WEBP", quality=80, exif=b"Exif\0\0"), id="webp-extended"),
    pytest.param(_opencv(".tif"), id="tiff"), pytest.param(_pil("TIFF", big_tiff=True), id="bigtiff"),
    pytest.param(_big_endian_tiff(), id="tiff-big-endian"),
    pytest.param(_opencv(".ppm"), id="ppm"), pytest.param(_opencv(".pgm", 1), id="pgm"),
    pytest.param(b"P2\n# a comment\n53 37\n255\n", id="pgm-comment"),
])
def test_image_size_from_the_header(data):
    assert image_size(data) == (WIDTH, HEIGHT)


def test_decoders_agree_with_the_header_sizes():
    for data in (_opencv(".png"), _opencv(".jpg"), _pil("GIF"), _pil("WEBP", lossless=True),
                 _pil("TIFF", big_tiff=True), _opencv(".bmp"), _opencv(".ppm")):
        assert decode_image(data).shape == (HEIGHT, WIDTH, 3)


def test_no_size_from_other_data():
    for data in (b"", b"not an image", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF",
                 b"II*\0\xff\xff\xff\x00", b"RIFF\0\0\0\0WEBPVP8 ", b"GIF89a"):
        assert image_size(data) is None, data


def test_a_huge_png_is_refused_from_its_header():
    """20000 x 20000 (400 megapixels) in 4 KB: refused in milliseconds, never decoded."""
    data = png_header_only(20000, 20000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge) as caught:
        decode_image(data, "huge.png")
    assert time.perf_counter() - start < 0.5
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("huge.png: image is 20000 x 20000 pixels (400.0 megapixels), over the limit "
                       "of 40 megapixels (--max-pixels or max_pixels= raises it)")
    # a raised limit lets it through to the decoder, which finds the pixel data missing
    with pytest.raises(OnnxcamError, match="huge.png: cannot read image \\(corrupt") as decoded:
        decode_image(data, "huge.png", max_pixels=None)
    assert not isinstance(decoded.value, ImageTooLarge)


def test_the_limit_at_real_sizes():
    """A 7300 x 5600 JPEG (40.9 MP) is refused by default and decodes once the limit is raised."""
    from skimage import data as photos

    photo = cv2.resize(photos.chelsea(), (7300, 5600), interpolation=cv2.INTER_NEAREST)
    data = cv2.imencode(".jpg", photo)[1].tobytes()
    with pytest.raises(ImageTooLarge, match="7300 x 5600 pixels \\(40.9 megapixels\\)"):
        decode_image(data)
    assert decode_image(data, max_pixels=41_000_000).shape == (5600, 7300, 3)
    assert DEFAULT_MAX_PIXELS == 40_000_000


def test_unsupported_formats_are_named(tmp_path):
    with pytest.raises(UnsupportedImage, match="x.jp2: cannot read image \\(not a supported image "
                                               "format \\(PNG, JPEG, GIF, BMP, WebP, TIFF"):
        decode_image(b"\0\0\0\x0cjP  \r\n\x87\n", "x.jp2")


def test_explainer_applies_the_limit(tmp_path):
    from onnxcam import Explainer

    model = make_explain_graph(tmp_path / "m.onnx")
    (tmp_path / "huge.png").write_bytes(png_header_only(9000, 9000))
    with pytest.raises(ImageTooLarge, match="huge.png: image is 9000 x 9000 pixels"):
        Explainer(model.path).explain(tmp_path / "huge.png")
    small = Explainer(model.path, max_pixels=1000)
    with pytest.raises(ImageTooLarge, match="images\\[0\\]: image is 40 x 30 pixels .* limit of 0.001 megapixels"):
        small.explain(np.zeros((30, 40, 3), np.uint8))
    assert len(Explainer(model.path, max_pixels=1200).explain(np.zeros((30, 40, 3), np.uint8))) == 1
    save_png(tmp_path / "ok.png", np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(ImageTooLarge, match="ok.png: image is 40 x 30"):
        load_image(tmp_path / "ok.png", max_pixels=1000)


def test_cli_refuses_a_huge_png_and_completes_the_others(tmp_path):
    make_explain_graph(tmp_path / "m.onnx")
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 20000))
    (tmp_path / "ok.png").write_bytes(encode_png(np.full((30, 40, 3), 90, np.uint8)))
    run = lambda *extra: run_cli("explain", "m.onnx", "huge.png", "ok.png", "-o", "out", *extra,  # noqa: E731
                                 cwd=tmp_path, timeout=120)
    proc = run()
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("onnxcam: huge.png: image is 20000 x 20000 pixels (400.0 megapixels), "
                                   "over the limit of 40 megapixels (--max-pixels or max_pixels= raises it)")
    assert (tmp_path / "out" / "ok_gradcam_1.png").is_file()
    proc = run("--max-pixels", "1000")
    assert proc.returncode == 1 and "ok.png: image is 40 x 30 pixels" in proc.stderr
    assert "huge.png: image is 20000 x 20000" in proc.stderr
    proc = run("--max-pixels", "many")
    assert proc.returncode == 2
    assert "--max-pixels: expected a whole number of pixels, got 'many'" in proc.stderr
