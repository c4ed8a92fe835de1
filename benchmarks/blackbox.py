"""RISE on a plain classifier file: onnxcam (masked copies scored in onnxruntime batches)
against OpenVINO XAI's RISE (one OpenVINO inference per mask), same masks, same image.

    python benchmarks/blackbox.py                          # resnet18 (random init, seed 0), 224 px, 1000 masks, 2 threads
    python benchmarks/blackbox.py --ovxai-python /path/to/venv/bin/python

openvino-xai pins numpy < 2 and its own OpenCV, so it lives in a virtual environment of its
own (``python -m venv ovxai && ovxai/bin/pip install openvino-xai``); ``--ovxai-python``
names that interpreter (default: this one, where the row is skipped if it is missing). Each
contender runs in a fresh process; the first run is a warm-up, then the median of
``--repeats``. The quality column is the largest difference between the contender's
min-max-normalized map and OpenVINO XAI's (0 = the same map).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _contender(args: argparse.Namespace) -> None:
    """One contender, in its own process: time RISE on the saved input, save its map."""
    x = np.load(args.input)
    runs = []
    if args.contender == "openvino-xai":
        import openvino as ov
        from openvino_xai.methods.black_box.rise import RISE

        def softmax(outputs):
            z = outputs[0] - outputs[0].max(axis=1, keepdims=True)
            return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

        core = ov.Core()
        model = core.read_model(args.model_file)
        rise = RISE(model, postprocess_fn=softmax, prepare_model=False)
        rise._model_compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": args.threads})

        def explain(masks: int) -> np.ndarray:
            maps = rise.generate_saliency_map(x, target_indices=[args.target], num_masks=masks,
                                              num_cells=args.cells, prob=0.5, seed=0, scale_output=False)
            return maps[args.target]
    else:
        from onnxcam.api.plain_files import PlainExplainer
        from onnxcam.methods.gradient_free import RISE

        explainer = PlainExplainer(args.model_file, threads=args.threads)

        def explain(masks: int) -> np.ndarray:
            result = explainer.explain(x, method=RISE(samples=masks, cells=args.cells), targets=[args.target],
                                       normalized=True, forward_batch_size=args.forward_batch)
            return result.raw_maps[0, 0]
    explain(min(args.masks, 32))  # warm-up
    for _ in range(args.repeats):
        started = time.perf_counter()
        saliency = explain(args.masks)
        runs.append(time.perf_counter() - started)
    np.save(args.output, np.asarray(saliency, np.float64))
    print(json.dumps({"seconds": statistics.median(runs), "runs": runs}))


def _plain_file(name: str, size: int, folder: Path) -> tuple[Path, np.ndarray, int]:
    """The torchvision model as a plain ONNX file, a preprocessed photo, its top class."""
    import onnxruntime as ort
    import skimage.data
    import torch
    import torchvision

    from onnxcam.images.geometry import preprocess
    from onnxcam.runtime.artifact import ArtifactInfo

    path = folder / f"{name}_{size}.onnx"
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval()
    torch.onnx.export(model, (torch.randn(1, 3, size, size),), str(path), dynamo=True, opset_version=18,
                      input_names=["image"], dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    info = ArtifactInfo(layers=[], input_size=(size, size), mean=[0.485, 0.456, 0.406],
                        std=[0.229, 0.224, 0.225], num_classes=1000)
    x, _ = preprocess([skimage.data.chelsea()], info)
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    return path, x, int(logits.argmax())


def _normalized(m: np.ndarray) -> np.ndarray:
    return (m - m.min()) / max(float(m.max() - m.min()), 1e-30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--masks", type=int, default=1000)
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ovxai-python", default=sys.executable)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    for hidden in ("--model-file", "--input", "--output"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--target", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--forward-batch", type=int, default=32, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        _contender(args)
        return 0
    # imported here, in the parent alone: openvino-xai's own interpreter need not import onnxcam
    from benchmarks.side_by_side import child_env

    env = {**child_env(), "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, x, target = _plain_file(args.model, args.size, folder)
        np.save(folder / "x.npy", x)
        contenders = [("openvino-xai", args.ovxai_python, 1), ("onnxcam rise, batch 1", sys.executable, 1),
                      ("onnxcam rise, batch 32", sys.executable, 32)]
        rows = []
        for label, python, batch in contenders:
            out = folder / f"{len(rows)}.npy"
            command = [python, __file__, "--contender", label.split(",")[0], "--model-file", str(path),
                       "--input", str(folder / "x.npy"), "--output", str(out), "--target", str(target),
                       "--masks", str(args.masks), "--cells", str(args.cells), "--threads", str(args.threads),
                       "--repeats", str(args.repeats), "--forward-batch", str(batch)]
            proc = subprocess.run(command, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
                print(f"{label}: skipped ({reason})", file=sys.stderr)
                continue
            rows.append((label, json.loads(proc.stdout.strip().splitlines()[-1])["seconds"], np.load(out)))
    reference = next((m for label, _, m in rows if label == "openvino-xai"), None)
    base = next((s for label, s, _ in rows if label == "openvino-xai"), None)
    print(f"{args.model}, {args.size} px, {args.masks} masks of {args.cells}x{args.cells} cells, "
          f"{args.threads} threads, median of {args.repeats}")
    print("| contender | s per image | masks/s | × openvino-xai speed | max |map - openvino-xai map| |")
    print("|---|---|---|---|---|")
    for label, seconds, saliency in rows:
        speed = f"{base / seconds:.2f}" if base else "—"
        diff = f"{np.abs(_normalized(saliency) - _normalized(reference)).max():.1e}" if reference is not None else "—"
        print(f"| {label} | {seconds:.2f} | {args.masks / seconds:.0f} | {speed} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
