"""``onnxcam export NAME|FILE --int8 --calibration DIR``: quantize a float classifier to INT8 while
exporting it, and measure what the quantization changed.

The float model (a plain ``.onnx`` file, or a zoo model saved as one) is quantized by onnxruntime's
static quantizer in QDQ form (uint8 activations, int8 per-channel weights) on the calibration
images, preprocessed exactly as the model's explain-graph preprocesses images. The INT8 file is then
exported like any plain file. On the same images, the INT8 explain-graph is compared with the
float32 one: how often the top classes agree, and the Pearson correlation of their Grad-CAM
heatmaps for the float32 model's top class. Both figures go into the metadata
(``quantization.calibration``) and are printed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from onnxcam.errors import OnnxcamError, first_line
from onnxcam.images.geometry import preprocess
from onnxcam.images.sources import images_under, load_images
from onnxcam.quiet import quiet_loggers
from onnxcam.runtime.artifact import ArtifactInfo
from onnxcam_export.onnx_file import export_onnx_file, file_input, read_source, store_metadata

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_images(folder: str | Path) -> list[np.ndarray]:
    """The images under ``folder`` as RGB uint8 arrays."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OnnxcamError(f"--calibration: {folder} is not a folder")
    paths = images_under(folder)
    if not paths:
        raise OnnxcamError(f"--calibration: no images in {folder}")
    return load_images([str(p) for p in paths], None)


def quantize_file(source: Path, out: Path, inputs: Sequence[np.ndarray], input_name: str,
                  method: str = "minmax") -> None:
    """Write the float file ``source`` quantized by onnxruntime's static QDQ quantizer, calibrated
    on ``inputs`` (each one batch the file takes) with ``method`` (see CALIBRATION_METHODS)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise OnnxcamError(f"--calibration-method: expected one of {', '.join(CALIBRATION_METHODS)}, "
                           f"got {method!r}")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(inputs)

        def get_next(self) -> Optional[dict]:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as folder, quiet_loggers(("",)):
        prepared = Path(folder) / "prepared.onnx"
        try:  # shape inference and the quantizer's own graph clean-up
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 (any exporter's file): quantize the file as it is
            prepared = source
        try:
            quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=calibrate)
        except Exception as exc:  # onnxruntime.quantization raises many types
            raise OnnxcamError(f"--int8: onnxruntime's quantizer failed on {source.name}: {first_line(exc)}") from exc


def compare(float_graph: Path, int8_graph: Path, images: Sequence[np.ndarray]) -> list[dict]:
    """Per image: the float32 explain-graph's top class and its probability, the INT8 one's top
    class, and the Pearson correlation of their Grad-CAM heatmaps for the float32 top class
    (None where either map is constant)."""
    from onnxcam import Explainer

    reference = Explainer(float_graph).explain(list(images), "gradcam")
    quantized = Explainer(int8_graph).explain(list(images), "gradcam", targets=reference.classes)
    rows = []
    for i in range(len(images)):
        a, b = reference.heatmaps[i][0].ravel(), quantized.heatmaps[i][0].ravel()
        rows.append({"fp32_class": int(reference.classes[i, 0]), "fp32_prob": round(float(reference.probs[i, 0]), 4),
                     "int8_class": int(quantized.logits[i].argmax()), "label": reference.label(i),
                     "correlation": round(float(np.corrcoef(a, b)[0, 1]), 4) if a.std() > 0 and b.std() > 0 else None})
    return rows


def fidelity(float_graph: Path, int8_graph: Path, images: Sequence[np.ndarray]) -> dict:
    """``compare``'s rows summed up: how many images, the share whose top classes agree, and the
    mean correlation of the Grad-CAM heatmaps."""
    rows = compare(float_graph, int8_graph, images)
    correlations = [row["correlation"] for row in rows if row["correlation"] is not None]
    return {"images": len(rows),
            "top1_agreement": round(sum(row["fp32_class"] == row["int8_class"] for row in rows) / len(rows), 4),
            "gradcam_correlation": round(float(np.mean(correlations)), 4) if correlations else None}


def export_int8(source: str | Path, out: str | Path, calibration: str | Path, method: str = "minmax",
                **options) -> ArtifactInfo:
    """Quantize the float classifier file ``source`` on the images under ``calibration`` and write
    its INT8 explain-graph to ``out``. ``options`` go to
    :func:`onnxcam_export.onnx_file.export_onnx_file` (preprocessing, layers, maps, ...)."""
    source, out = Path(source), Path(out)
    images = calibration_images(calibration)
    read = read_source(source, options.get("output"), options.get("layout"), options.get("input_size"))
    if read.form is not None:
        raise OnnxcamError(f"--int8: {source.name} is already quantized ({read.form}); export it without --int8")
    layers = options.pop("target_layers", None)  # tensor names of the INT8 file
    with tempfile.TemporaryDirectory() as folder:
        float_graph, int8_file = Path(folder) / "float32.onnx", Path(folder) / f"{source.stem}_int8.onnx"
        float_info = export_onnx_file(source, float_graph, **options)
        batch = read.image.batch or 1
        inputs = [np.repeat(file_input(preprocess([image], float_info)[0], read.image,
                                       options.get("channels", "RGB").upper()), batch, axis=0)
                  for image in images]
        quantize_file(source, int8_file, inputs, read.image.name, method)
        info = export_onnx_file(int8_file, out, layers, **options)
        info.quantization.update({"calibration_method": method, "calibration": fidelity(float_graph, out, images),
                                  "from": source.name})
    store_metadata(out, info)
    return info
