"""INT8 files made from a small residual CNN by onnxruntime's own quantizers, for the INT8 tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch
from torch import nn

from onnxcam.images.geometry import preprocess
from onnxcam.runtime.artifact import ArtifactInfo

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


class ResidualNet(nn.Module):
    """conv-bn-relu, a residual block, a strided conv, global pooling and a linear head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(32, 6)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.block(x))
        return self.head(self.down(x).mean(dim=(2, 3)))


def photos(size: int) -> list[np.ndarray]:
    """scikit-image's photos resized to ``size`` x ``size``."""
    return [cv2.resize(getattr(skimage.data, name)(), (size, size), interpolation=cv2.INTER_AREA) for name in PHOTOS]


def inputs(size: int) -> list[np.ndarray]:
    """The photos as ImageNet-normalized [1, 3, size, size] batches."""
    info = ArtifactInfo(layers=[], input_size=(size, size), mean=[0.485, 0.456, 0.406],
                        std=[0.229, 0.224, 0.225], num_classes=6)
    return [preprocess([photo], info)[0] for photo in photos(size)]


def quantized_files(folder: Path, size: int, forms: tuple = ("qdq_tensor_u8", "qdq_channel_u8", "qdq_channel_s8",
                                                             "qoperator", "dynamic")) -> dict[str, Path]:
    """``float.onnx`` (random weights, seed 0, batch norms that do something) and its quantized
    ``forms``, calibrated on the photos."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    torch.manual_seed(0)
    net = ResidualNet().eval()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    out = {"float": folder / "float.onnx"}
    torch.onnx.export(net, (torch.randn(1, 3, size, size),), str(out["float"]), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(inputs(size))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    static = {"qdq_tensor_u8": (QuantFormat.QDQ, False, QuantType.QUInt8),
              "qdq_channel_u8": (QuantFormat.QDQ, True, QuantType.QUInt8),
              "qdq_channel_s8": (QuantFormat.QDQ, True, QuantType.QInt8),
              "qoperator": (QuantFormat.QOperator, True, QuantType.QUInt8)}
    for name in forms:
        out[name] = folder / f"{name}.onnx"
        if name == "dynamic":
            quantize_dynamic(str(out["float"]), str(out[name]))
            continue
        form, per_channel, activations = static[name]
        quantize_static(str(out["float"]), str(out[name]), Reader(), quant_format=form, per_channel=per_channel,
                        activation_type=activations, weight_type=QuantType.QInt8)
    return out


def torch_fake_quantized_file(path: Path, size: int) -> Path:
    """The net with torch.ao ``FakeQuantize`` modules on its input and two stages' outputs
    (observed on the photos), exported by the TorchScript exporter: a QDQ file of uint8
    activation pairs and float weights, as quantization-aware training exports it."""
    import torch.ao.quantization as tq

    def fake() -> nn.Module:
        return tq.FakeQuantize(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                               dtype=torch.quint8)

    torch.manual_seed(0)
    net = ResidualNet()
    net.stem, net.down = nn.Sequential(net.stem, fake()), nn.Sequential(net.down, fake())
    model = nn.Sequential(fake(), net).train()
    with torch.no_grad():
        for batch in inputs(size):
            model(torch.from_numpy(batch))
    model.eval().apply(tq.disable_observer)
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)
    return path
