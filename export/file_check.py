"""`onnxcam export --check FILE`: what onnxcam sees in a plain classifier file, without exporting
it: its input, output and head, its ops (and which of them the reader does not take), the
candidate target layers and the one an export would pick."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import torch

from onnxcam.errors import OnnxcamError
from onnxcam_export.onnx_file import chosen_default, classifier, layer_choices, read_source
from onnxcam_export.onnx_ops import OPS, REFUSED, Node
from onnxcam_export.onnx_reader import needed_tensors


def check_file(path: str | Path, output: Optional[str] = None, layout: Optional[str] = None,
               input_size: Optional[Sequence[int]] = None, channels: str = "rgb") -> tuple[list[str], bool]:
    """The report's lines, and whether the file can be exported as it is."""
    path = Path(path)
    try:
        source = read_source(path, output, layout, input_size)
    except OnnxcamError as error:
        return [f"file: {path}", f"verdict: not exportable: {error}"], False
    model = source.model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    image = source.image
    lines = [f"file: {path.name} (opset {opset}, IR {model.ir_version}, from {model.producer_name or '?'} "
             f"{model.producer_version})".replace(" )", ")"),
             f"input: {image.name} {image.layout}, {image.channels} channel{'s' * (image.channels > 1)}, "
             f"{image.size[0]}x{image.size[1]}, batch {image.batch or 'dynamic'}"]
    behind = {"softmax": "the input of its final softmax", "sigmoid": "the input of its final sigmoid"}
    lines.append(f"output: {source.output}; logits: {behind.get(source.probabilities, 'the output itself')}")
    needed = needed_tensors([Node(n, opset) for n in model.graph.node], source.logits)
    nodes = [n for n in model.graph.node if needed.intersection(n.output)]
    counts = Counter(_op(n) for n in nodes)
    lines.append(f"ops ({len(counts)} types, {len(nodes)} nodes): "
                 + ", ".join(f"{op} {count}" for op, count in sorted(counts.items())))
    unknown = sorted(op for op in counts if op not in OPS)
    lines.append("unsupported ops: " + (", ".join(
        f"{op} ({REFUSED[op].split(';')[0]})" if op in REFUSED else op for op in unknown) or "none"))
    try:
        module = classifier(source, channels)
        choices = layer_choices(module, image.size)
        with torch.no_grad():
            columns = int(module(torch.zeros(1, 3, *image.size)).shape[1])
    except (OnnxcamError, RuntimeError) as error:
        lines.append(f"verdict: not exportable: {str(error).splitlines()[0]}")
        return lines, False
    head = "binary (classes z and not-z)" if columns == 1 else \
        f"{'sigmoid (multi-label)' if source.probabilities == 'sigmoid' else 'softmax'}, {columns} classes"
    lines.append(f"head: {head}")
    candidates = [c for c in choices if c.excluded is None]
    lines += [f"candidate layer: {c.name} {list(c.shape[1:])} ({c.layout})" for c in candidates]
    for why, count in Counter(c.excluded for c in choices if c.excluded is not None).items():
        lines.append(f"not candidates: {count} tensor{'s' * (count > 1)}: {why}")
    try:
        proposed = chosen_default(module, choices)
    except OnnxcamError as error:
        lines.append(f"verdict: not exportable as it is: {error}")
        return lines, False
    if not candidates:
        why = "no map is reached by the gradient (a zero head?): its maps will be flagged constant"
    elif proposed == candidates[-1].name:
        why = "the last map or token grid the gradient reaches"
    else:
        why = "the rectifier's output that the last candidate, a batch norm or scale of it, is made from"
    lines.append(f"proposed target layer: {proposed} ({why})")
    lines.append(f"verdict: exportable (onnxcam export {path})")
    return lines, True


def _op(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
