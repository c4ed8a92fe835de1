"""A classifier whose evidence is known by construction, and photos for it.

``EvidenceNet`` (64 x 64 RGB, normalized with mean 0.5, std 0.25): a 3x3 convolution computes
the local mean brightness b of the pixels; ReLU(b - 0.6) ("bright") and ReLU(0.3 - b) ("dark")
are the target layer ``relu``; global average pooling and a linear head give three logits:
``background`` (0), ``square`` (200 x mean bright - 2) and ``dark`` (20 x mean dark - 2).
``photo`` draws a white square on a dark random background: the square is the only evidence
for ``square``, and its pixels are exactly where the class's evidence lies.
"""
from __future__ import annotations

import numpy as np

SIZE = 64
SQUARE = 16
MEAN, STD = (0.5,) * 3, (0.25,) * 3
LABELS = ["background", "square", "dark"]
SQUARE_CLASS, DARK_CLASS = 1, 2


def evidence_net():
    """The torch model (eval mode, weights set by hand)."""
    import torch
    from torch import nn

    class EvidenceNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3, padding=1)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 3)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))

    model = EvidenceNet().eval()
    with torch.no_grad():
        # brightness b = mean over channels and the 3x3 window of (z * std + mean)
        weight = torch.full((3, 3, 3), STD[0] / 27)
        model.conv.weight[0] = weight
        model.conv.weight[1] = -weight
        model.conv.bias.copy_(torch.tensor([MEAN[0] - 0.6, 0.3 - MEAN[0]]))
        model.fc.weight.copy_(torch.tensor([[0.0, 0.0], [200.0, 0.0], [0.0, 20.0]]))
        model.fc.bias.copy_(torch.tensor([0.0, -2.0, -2.0]))
    return model


def export_evidence_net(path):
    """Export ``evidence_net`` with onnxcam_export; returns (model, path)."""
    from onnxcam_export import export

    model = evidence_net()
    export(model, path, ["relu"], input_size=(SIZE, SIZE), mean=MEAN, std=STD, labels=LABELS)
    return model, path


def photo(top: int, left: int, seed: int = 0) -> np.ndarray:
    """A 64 x 64 RGB uint8 photo: dark noise (0..90) with a white square at (top, left)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 91, (SIZE, SIZE, 3), dtype=np.uint8)
    image[top:top + SQUARE, left:left + SQUARE] = 255
    return image


def square_map(top: int, left: int) -> np.ndarray:
    """The evidence map: 1 on the square, 0 elsewhere."""
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[top:top + SQUARE, left:left + SQUARE] = 1.0
    return heat
