"""`onnxcam export`: command-line front of :func:`onnxcam_export.export`, registered with the
runtime's command line under the ``onnxcam.commands`` entry point (``add_arguments``, ``run``)."""
from __future__ import annotations

import argparse
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import onnxcam_export.exporter  # noqa: F401  (loads PyTorch: a broken install fails here, before parsing)
from onnxcam.cli.options import add_preprocessing_arguments, preprocessing_options
from onnxcam.errors import OnnxcamError
from onnxcam.images.plain_input import read_labels
from onnxcam.runtime.artifact import DEFAULT_MAPS
from onnxcam.runtime.model_files import model_file
from onnxcam_export.int8 import CALIBRATION_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?",
                        help="torchvision name (resnet50), zoo name, module:factory, or a plain classifier .onnx file")
    parser.add_argument("-o", "--output", help="explain-graph to write (default: models/MODEL.onnx)")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained), 'none' (random init) or a local state-dict .pth")
    parser.add_argument("--layer", action="append", dest="layer_names", metavar="NAME",
                        help="target layer (repeatable; of an .onnx file: a tensor name); default: the "
                             "recipe's or the last spatial module (tensor)")
    parser.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"))
    parser.add_argument("--guided", action="store_true", help="add the guided-backprop input gradient")
    parser.add_argument("--input-gradient", action="store_true", help="add the plain input gradient")
    parser.add_argument("--score", choices=("logit", "softmax"), default="logit",
                        help="differentiate the pre-softmax logit (default) or the softmax probability")
    parser.add_argument("--head", choices=("softmax", "sigmoid"),
                        help="how class probabilities follow from the logits: softmax (one class), or sigmoid "
                             "(multi-label); default: sigmoid where the file ends in one, else softmax; a "
                             "one-logit model is always binary (classes z and not-z)")
    parser.add_argument("--resize", choices=("stretch", "crop"), default="stretch",
                        help="preprocessing: stretch the whole image, or resize+center-crop as in training")
    parser.add_argument("--maps", metavar="METHODS", type=_method_list, default=list(DEFAULT_MAPS),
                        help="comma-separated CAM methods whose heatmaps the graph computes itself "
                             "(gradcam, gradcam++, xgradcam, hirescam, layercam; default gradcam; "
                             "'none' for none)")
    parser.add_argument("--fp16", action="store_true",
                        help="float16 weights, input and outputs (for GPUs; see the README)")
    parser.add_argument("--labels", metavar="FILE", help="class names, one per line")
    parser.add_argument("--int8", action="store_true",
                        help="quantize to INT8 (static QDQ, per-channel weights) while exporting; needs --calibration")
    parser.add_argument("--calibration", metavar="DIR", help="--int8: images to calibrate the quantization on")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax",
                        help="--int8: how activation ranges are chosen (default minmax)")
    add_preprocessing_arguments(parser)
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--list", action="store_true", help="list the model names and exit")
    parser.add_argument("--check", action="store_true",
                        help="of a plain .onnx file: list its ops (and those not supported), its head and its "
                             "candidate target layers, and whether it exports; writes nothing (exit 1: it does not)")
    parser.add_argument("--layers", action="store_true", dest="list_layers",
                        help="list the candidate target layers of MODEL with their output shapes and exit")


@contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A path beside ``output`` to export to; it becomes ``output`` only when the export (with its
    checks) succeeds, so a failed or interrupted export leaves no half file and keeps an older one."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.partial")
    try:
        yield partial
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _method_list(text: str) -> list[str]:
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    return [] if names == ["none"] else names


def run(args: argparse.Namespace) -> int:
    """Run `onnxcam export`; returns the exit code."""
    from onnxcam_export import models

    if args.list:
        print("\n".join(models.list_models()))
        return 0
    if not args.model:
        raise OnnxcamError("export: name a MODEL (see `onnxcam export --list`)")
    if args.int8 != bool(args.calibration):
        raise OnnxcamError("--int8 needs --calibration DIR (the images to calibrate on)" if args.int8
                           else "--calibration: only with --int8")
    if args.int8 and args.fp16:
        raise OnnxcamError("--int8 and --fp16 exclude each other")
    if args.model.lower().endswith(".onnx"):
        return _export_onnx_file(args)
    if args.check:
        raise OnnxcamError("--check: only for a plain .onnx file (a named model is always exportable)")
    given = [option for option, value in preprocessing_options(args).items() if value is not None]
    if given:
        raise OnnxcamError(f"--{given[0].replace('output', 'output-name')}: only for a plain .onnx file; "
                           f"the recipe of {args.model} sets the preprocessing")
    recipe = models.recipe(args.model)
    model = recipe.build(args.weights)
    size = tuple(args.input_size) if args.input_size else recipe.input_size
    if args.list_layers:
        import torch

        from onnxcam_export.layers import candidate_layers

        for name, shape in candidate_layers(model.eval(), torch.randn(1, 3, *size)):
            print(f"{name}\t{list(shape[1:])}")
        return 0
    from onnxcam_export import export

    output = Path(args.output) if args.output else model_file(args.model)
    labels = read_labels(args.labels) if args.labels else recipe.labels()
    if args.int8:
        return _export_int8(args, model, recipe, size, labels, output)
    layers = args.layer_names or recipe.layers
    started = time.perf_counter()
    with staged(output) as partial:
        info = export(model, partial, target_layers=layers, input_size=size,
                      mean=recipe.mean, std=recipe.std, labels=labels, guided=args.guided,
                      plain_input_gradient=args.input_gradient, score=args.score, resize=args.resize,
                      resize_size=recipe.resize_size if args.resize == "crop" else None,
                      source=recipe.source, opset=args.opset, maps=args.maps, head=args.head,
                      precision="float16" if args.fp16 else "float32",
                      layouts={name: recipe.layout for name in layers or []} if recipe.layout else None)
    print(json.dumps({"model": str(output), "layers": info.layers, "input_size": list(info.input_size),
                      "classes": info.num_classes, "cam_layer": info.cam_layer, "maps": info.maps,
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


def _export_onnx_file(args: argparse.Namespace) -> int:
    """`onnxcam export MODEL.onnx`: a plain classifier file becomes an explain-graph."""
    from onnxcam_export.onnx_file import (
        classifier,
        export_onnx_file,
        layer_choices,
        read_source,
    )

    source = Path(args.model)
    prep = {key: value for key, value in preprocessing_options(args).items() if value is not None}
    if args.check:
        from onnxcam_export.file_check import check_file

        lines, exportable = check_file(source, prep.get("output"), prep.get("layout"), args.input_size,
                                       prep.get("channels", "rgb"))
        print("\n".join(lines))
        return 0 if exportable else 1
    if args.list_layers:
        read = read_source(source, prep.get("output"), prep.get("layout"), args.input_size)
        for choice in layer_choices(classifier(read, prep.get("channels", "rgb")), read.image.size):
            print(f"{choice.name}\t{list(choice.shape[1:])}\t" + (
                f"candidate ({choice.layout})" if choice.excluded is None else f"not a candidate: {choice.excluded}"))
        return 0
    output = Path(args.output) if args.output else model_file(source.stem)
    if output.resolve() == source.resolve():
        raise OnnxcamError(f"-o: {output} is the source file itself; name another output")
    started = time.perf_counter()
    options = dict(
        target_layers=args.layer_names, input_size=args.input_size,
        mean=prep.get("mean"), std=prep.get("std"), scale=prep.get("scale"),
        channels=prep.get("channels", "rgb"), layout=prep.get("layout"),
        labels=read_labels(args.labels) if args.labels else None, output=prep.get("output"),
        **_explain_options(args))
    with staged(output) as partial:
        if args.int8:
            from onnxcam_export.int8 import export_int8

            info = export_int8(source, partial, args.calibration, args.calibration_method, **options)
        else:
            info = export_onnx_file(source, partial, precision="float16" if args.fp16 else "float32", **options)
    _report(output, info, started)
    return 0


def _explain_options(args: argparse.Namespace) -> dict:
    """What the file computes, as export_onnx_file's options."""
    return dict(guided=args.guided, plain_input_gradient=args.input_gradient, score=args.score,
                resize=args.resize, opset=args.opset, maps=args.maps, head=args.head)


def _report(output: Path, info, started: float) -> None:
    """The one JSON line an export of a file prints."""
    print(json.dumps({"model": str(output), "layers": info.layers, "input_size": list(info.input_size),
                      "classes": info.num_classes, "cam_layer": info.cam_layer, "maps": info.maps,
                      "head": info.head, "probability_output": info.extra.get("onnx_probabilities"),
                      **({"quantization": info.quantization} if info.quantization else {}),
                      "seconds": round(time.perf_counter() - started, 1)}))


def _export_int8(args: argparse.Namespace, model, recipe, size: tuple[int, int], labels, output: Path) -> int:
    """`onnxcam export NAME --int8`: the zoo model saved as a plain float file, then quantized and
    exported (its target layer: --layer as a tensor name of the INT8 file, else the last spatial one)."""
    import tempfile

    import torch

    from onnxcam_export.exporter import export_plain
    from onnxcam_export.int8 import export_int8

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, staged(output) as partial:
        plain = Path(folder) / f"{args.model}.onnx"
        export_plain(model.eval(), torch.randn(2, 3, *size), plain)
        info = export_int8(plain, partial, args.calibration, args.calibration_method, target_layers=args.layer_names,
                           input_size=size, mean=recipe.mean, std=recipe.std, labels=labels,
                           resize_size=recipe.resize_size if args.resize == "crop" else None, **_explain_options(args))
    _report(output, info, started)
    return 0
