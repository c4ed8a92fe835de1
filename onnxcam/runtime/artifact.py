"""The explain-graph artifact: output names and the metadata an exported file carries."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

# 2: ``scale`` (pixel range before mean/std) and ``channels``/``layout`` honoured by the runtime;
# files of version 1 read as scale 1, RGB, NCHW (what they always were)
# 3: ``target_probs``; in-graph maps also give ``heatmaps/<m>`` and ``zero_maps/<m>``, and
# ``maps/<m>`` holds the raw map at the resolution the runtime's own raw maps have
# 4: ``quantization``: how an INT8 file is quantized (null for float files)
# 5: ``head``: how class probabilities follow from the logits ("softmax", or "sigmoid" for
# multi-label and one-logit files, whose logits are then [z, -z]); files before read as softmax
# 6: ``box_rules``: method -> box rule fitted to a user's boxes (onnxcam evaluate
# --calibrate-boxes, which may add it to a file of any version); absent or empty: shipped rules
FORMAT_VERSION = 6
METADATA_KEY = "onnxcam"

INPUT = "input"
TARGETS = "targets"
LOGITS = "logits"
TARGET_INDICES = "target_indices"
INPUT_GRADIENTS = "input_gradients"  # guided-backprop gradient w.r.t. the input
PLAIN_INPUT_GRADIENTS = "plain_input_gradients"  # ordinary gradient w.r.t. the input
LAYER_INPUT = "layer_input"  # [M, Ck, h, w] rows fed through the layers after the first target layer
LAYER_LOGITS = "layer_logits"  # [M, C] their logits
TARGET_PROBS = "target_probs"  # [N, K] probability of each resolved target (see ArtifactInfo.head)
DEFAULT_MAPS = ("gradcam",)  # methods whose heatmaps an export computes in the graph by default


def activation_name(layer: str) -> str:
    """Graph output holding the activations of ``layer``: [N, Ck, h, w]."""
    return f"activations/{layer}"


def gradient_name(layer: str) -> str:
    """Graph output holding d score / d activations of ``layer``: [N, K, Ck, h, w]."""
    return f"gradients/{layer}"


def map_name(method: str) -> str:
    """Graph output holding ``method``'s raw map computed in the graph: [N, K, h, w] at the
    layer's resolution for one target layer, at input resolution for several (fused); format
    version 2 files hold [N, K, H, W] at input resolution."""
    return f"maps/{method}"


def heatmap_name(method: str) -> str:
    """Graph output holding ``method``'s map resized to the input and min-max normalized:
    [N, K, H, W] in [0, 1], all zero where ``zero_map_name`` flags it (format version 3)."""
    return f"heatmaps/{method}"


def zero_map_name(method: str) -> str:
    """Graph output flagging ``method``'s constant (or non-finite) maps: bool [N, K]."""
    return f"zero_maps/{method}"


@dataclass
class ArtifactInfo:
    """Everything the runtime needs to know about an explain-graph, stored in its metadata."""

    layers: list[str]
    input_size: tuple[int, int]
    mean: list[float]
    std: list[float]
    num_classes: int
    labels: Optional[list[str]] = None
    layout: str = "NCHW"  # of the input: "NCHW" or "NHWC" (explain-graphs are always NCHW)
    channels: str = "RGB"  # colour order of the input, and of mean and std: "RGB" or "BGR"
    scale: int = 1  # pixels are scaled to [0, scale] (1 or 255) before mean and std
    resize: str = "stretch"  # "stretch": resize to input_size; "crop": shorter side to resize_size, center crop
    resize_size: Optional[int] = None
    source: str = ""
    score: str = "logit"  # which score is differentiated: "logit" or "softmax"
    # "softmax": one class per image; "sigmoid": independent per-class probabilities (multi-label);
    # "binary": a one-logit file z, served as the two classes [z, -z] ("not the class"), sigmoid each
    head: str = "softmax"
    guided: bool = False
    plain_input_gradient: bool = False
    cam_layer: Optional[str] = None  # layer feeding a GAP -> linear head, where CAM is defined
    layer_input: Optional[str] = None  # the layer `layer_input` rows enter after; None: no such input
    layouts: dict = field(default_factory=dict)  # layer -> "nhwc" | "tokens" | "distilled" | "patches" where not NCHW
    maps: list = field(default_factory=list)  # methods whose maps the graph computes (map_name)
    precision: str = "float32"  # of the weights, the input and the float outputs: or "float16"
    quantization: Optional[dict] = None  # of an INT8 file: its form, integer types, fused kernels, calibration
    box_rules: dict = field(default_factory=dict)  # method -> box rule spec ("peak:0.3"), fitted to a user's boxes
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def probability(self) -> str:
        """How a class's probability follows from the logits: "softmax" or "sigmoid"."""
        return "softmax" if self.head == "softmax" else "sigmoid"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ArtifactInfo":
        data = json.loads(text)
        data["input_size"] = tuple(data["input_size"])
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
