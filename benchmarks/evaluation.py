"""The README's evaluation table: CAM-family maps of the pretrained EfficientNet-Lite0 scored
with every metric of ``onnxcam evaluate`` on scikit-image's photos, in the groups of the
Grad-CAM++ paper's comparison: single objects, and composites of two photos side by side (the
same class twice; two classes, each class's map scored against its own half).

    python benchmarks/evaluation.py            # about 30 minutes on 2 cores (Score-CAM: 1280 passes a map)

Builds the photos, their boxes.json and the composites under ``--out``, exports the two model
files to ``models/`` when missing (Guided Grad-CAM needs the ``--guided`` file, whose every pass
costs more, so the other methods run on the plain one), runs ``onnxcam evaluate`` per group and
file, and prints one markdown table per group (also written to ``OUT/tables.md``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import skimage.data

ROOT = Path(__file__).resolve().parents[1]
METHODS = "cam,gradcam,gradcam++,xgradcam,layercam,scorecam"
GUIDED = "guided-gradcam"
# ImageNet classes and hand-drawn object boxes [x0, y0, x1, y1] in each photo's pixels
CAT, ESPRESSO, TRIPOD, MOPED, HELMET, MISSILE = 285, 967, 872, 665, 560, 657
OBJECTS = {  # name: (class, box)
    "chelsea": (CAT, [0, 0, 395, 300]),  # Egyptian cat
    "coffee": (ESPRESSO, [75, 15, 480, 390]),  # the cup on its saucer
    "camera": (TRIPOD, [228, 140, 410, 512]),  # the camera's tripod
    "motorcycle": (MOPED, [90, 95, 685, 450]),  # stereo_motorcycle's left view
    "astronaut": (HELMET, [275, 340, 512, 512]),  # the helmet she holds (Lite0's top class)
    "rocket": (MISSILE, [300, 125, 345, 410]),  # the rocket on its pad (Lite0's second class)
}
SAME_CLASS = {"cats": "chelsea", "espressos": "coffee"}  # the photo beside its mirror image
TWO_CLASSES = {"cat_espresso": ("chelsea", "coffee"), "moped_cat": ("motorcycle", "chelsea")}


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as RGB uint8."""
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    image = getattr(skimage.data, name)()
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def save(folder: Path, name: str, rgb: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def to_height(rgb: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    scale = height / rgb.shape[0]
    return cv2.resize(rgb, (round(rgb.shape[1] * scale), height), interpolation=cv2.INTER_AREA), scale


def build(out: Path) -> dict[str, Path]:
    """The three photo folders with their boxes.json (classes as keys: the images' targets)."""
    groups = {"single": out / "single", "same_class": out / "same_class", "two_classes": out / "two_classes"}
    boxes: dict[str, dict] = {group: {} for group in groups}
    for name, (cls, box) in OBJECTS.items():
        save(groups["single"], name, photo(name))
        boxes["single"][f"{name}.png"] = {str(cls): [box]}
    for name, source in SAME_CLASS.items():
        image = photo(source)
        cls, (x0, y0, x1, y1) = OBJECTS[source]
        width = image.shape[1]
        save(groups["same_class"], name, np.concatenate([image, image[:, ::-1]], axis=1))
        boxes["same_class"][f"{name}.png"] = {str(cls): [[x0, y0, x1, y1],
                                                        [2 * width - x1, y0, 2 * width - x0, y1]]}
    for name, (left, right) in TWO_CLASSES.items():
        first = photo(left)
        second, _ = to_height(photo(right), first.shape[0])
        height, split = first.shape[0], first.shape[1]
        save(groups["two_classes"], name, np.concatenate([first, second], axis=1))
        boxes["two_classes"][f"{name}.png"] = {
            str(OBJECTS[left][0]): [[0, 0, split, height]],
            str(OBJECTS[right][0]): [[split, 0, split + second.shape[1], height]]}
    for group, folder in groups.items():
        (out / f"{group}.boxes.json").write_text(json.dumps(boxes[group], indent=1) + "\n")
    return groups


def onnxcam(*args) -> None:
    subprocess.run([sys.executable, "-m", "onnxcam", *map(str, args)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "evaluation")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "efficientnet_lite0.onnx")
    parser.add_argument("--guided-model", type=Path, default=ROOT / "models" / "efficientnet_lite0_guided.onnx")
    args = parser.parse_args()
    for path, extra in ((args.model, []), (args.guided_model, ["--guided"])):
        if not path.is_file():
            onnxcam("export", "efficientnet_lite0", *extra, "-o", path)
    from onnxcam.evaluate import table
    from onnxcam.metrics import METRICS

    columns = [v for name, cls in METRICS.items() for v in cls().values if v.summary]
    lines = []
    for group, folder in build(args.out).items():
        means, counts = {}, {}
        for model, methods in ((args.model, METHODS), (args.guided_model, GUIDED)):
            result = args.out / "results" / f"{group}_{model.stem}"
            onnxcam("evaluate", model, folder, "--method", methods, "--boxes",
                    args.out / f"{group}.boxes.json", "-o", result)
            summary = json.loads((result / "metrics.json").read_text())
            for method, data in summary["methods"].items():
                means[method] = {k: float("nan") if v is None else v for k, v in data["means"].items()}
                counts[method] = f"{data['maps'] - data['zero_maps']}/{data['maps']}"
        lines += [f"### {group}", "", table(means, columns, counts), ""]
    text = "\n".join(lines)
    (args.out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
