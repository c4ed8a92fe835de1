"""From a photo to the network input and back (`onnxcam.images.geometry`): crop resizing and
padding, maps carried back to the photo's own pixels, format version 2's channel order,
layout and pixel scale, and version 1's metadata read as before."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import skimage.data

from onnxcam.images.geometry import Geometry, fit, preprocess
from onnxcam.runtime.artifact import ArtifactInfo
from support.images import random_rgb


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


def test_preprocess_honours_channels_layout_and_scale():
    """Version 2's fields: BGR order, NHWC layout and 0-255 pixels, against the formula."""
    image = skimage.data.astronaut()[:40, :60]
    info = ArtifactInfo(layers=[], input_size=(20, 30), mean=[104, 117, 123], std=[1, 2, 4], num_classes=2,
                        channels="BGR", layout="NHWC", scale=255)
    batch, _ = preprocess([image], info)
    resized = cv2.resize(image, (30, 20), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    expected = (resized[:, :, ::-1] - np.array([104, 117, 123], np.float32)) / np.array([1, 2, 4], np.float32)
    assert batch.shape == (1, 20, 30, 3)
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6)


def test_format_version_1_metadata_reads_as_before():
    """A version-1 file's metadata (no scale) is read as scale 1, RGB, NCHW: the same input."""
    old = json.dumps({"format_version": 1, "layers": ["layer4"], "input_size": [8, 8], "mean": [0.5, 0.4, 0.3],
                      "std": [0.2, 0.2, 0.2], "num_classes": 3, "layout": "NCHW", "channels": "RGB"})
    info = ArtifactInfo.from_json(old)
    image = skimage.data.coffee()[:8, :8]
    batch, _ = preprocess([image], info)
    expected = ((image.astype(np.float32) / 255.0 - np.array([0.5, 0.4, 0.3], np.float32))
                / np.float32(0.2)).transpose(2, 0, 1)
    assert info.scale == 1 and info.format_version == 1
    np.testing.assert_allclose(batch[0], expected, rtol=1e-6, atol=1e-6)  # one scale and offset: ulps apart
