"""The ONNX ops the reader supports, as the Markdown page docs/reference/onnx-ops.md, written
from :data:`~onnxcam_export.onnx_ops.OPS`, :data:`~onnxcam_export.onnx_ops.NOTES` and
:data:`~onnxcam_export.onnx_ops.REFUSED`: ``python -m onnxcam_export.op_list >
docs/reference/onnx-ops.md`` regenerates it (a test checks that the page is current)."""
from __future__ import annotations

from onnxcam_export.onnx_ops import NOTES, OPS, REFUSED

_INTRO = """\
# ONNX ops

The ops that onnxcam's ONNX reader (`onnxcam_export.onnx_reader`) reads from a plain `.onnx`
classifier ([Models held only as ONNX](../guides/plain-onnx.md)), each as the torch function
that computes it, so the exporter traces its backward. Only ops of the default domain are read,
and of each node only its first output (every output of `Split`). A form an op does not support
fails with the op's and the node's names, never with a wrong graph; the limits column lists those
forms. This page is generated: `python -m onnxcam_export.op_list > docs/reference/onnx-ops.md`.
"""


def markdown() -> str:
    """The page: every op of OPS, alphabetical, with its limits, then the refused ops by reason."""
    lines = [_INTRO, "| Op | Limits |", "| --- | --- |"]
    lines += [f"| `{op}` | {NOTES.get(op, '')} |" for op in sorted(OPS, key=str.lower)]
    lines += ["", "## Refused", "", "The reader knows these ops and refuses them, saying why:", "",
              "| Ops | Reason |", "| --- | --- |"]
    for reason in dict.fromkeys(REFUSED.values()):
        ops = ", ".join(f"`{op}`" for op in sorted(op for op, why in REFUSED.items() if why == reason))
        lines.append(f"| {ops} | {reason} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
