"""Decoding image files (`onnxcam.images.decode`): formats, bit depths, alpha, EXIF, and the
one-line reason a file cannot be read."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam import OnnxcamError
from onnxcam.images.decode import load_image, to_rgb_uint8
from support.images import random_rgb, write_image


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

