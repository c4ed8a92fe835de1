"""The README's evaluation tables: CAM-family maps of the pretrained EfficientNet-Lite0 scored
with every metric of ``onnxcam evaluate`` on scikit-image's photos, in the groups of the
Grad-CAM++ paper's comparison: single objects (six photos, object boxes drawn by hand), and
composites of two square crops side by side (the same class twice: the photo beside its mirror
image, or beside a copy at 60 % on grey, scored against both objects' boxes; two classes, each
class's map scored against its own half).

    python benchmarks/evaluation.py            # about an hour on 2 busy cores (Score-CAM: 1280 passes a map)

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
SAME_CLASS = ("chelsea", "coffee", "camera", "motorcycle")  # each beside its mirror image
SMALLER = ("chelsea", "coffee")  # each beside a copy at SCALE on grey: instances of unequal size
SCALE = 0.6
TWO_CLASSES = (("chelsea", "coffee"), ("motorcycle", "coffee"), ("motorcycle", "chelsea"))
TITLES = {"single": "Single objects", "same_class": "The same class twice",
          "two_classes": "Two classes, each map against its own half"}
HALF = 300  # pixels: each half of a composite is a HALF x HALF square


def photo(name: str) -> np.ndarray:
    """A scikit-image photo as RGB uint8."""
    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    image = getattr(skimage.data, name)()
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image


def square(name: str) -> tuple[np.ndarray, list[int]]:
    """The largest square of the photo centred on its object (as far as the photo allows),
    resized to HALF x HALF, and the object's box in it (clipped to the square)."""
    image = photo(name)
    x0, y0, x1, y1 = OBJECTS[name][1]
    side = min(image.shape[:2])
    left = int(np.clip((x0 + x1) // 2 - side // 2, 0, image.shape[1] - side))
    top = int(np.clip((y0 + y1) // 2 - side // 2, 0, image.shape[0] - side))
    crop = cv2.resize(image[top:top + side, left:left + side], (HALF, HALF), interpolation=cv2.INTER_AREA)
    scale = HALF / side
    box = [round(np.clip(v - offset, 0, side) * scale) for v, offset in
           ((x0, left), (y0, top), (x1, left), (y1, top))]
    return crop, box


def save(folder: Path, name: str, rgb: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def build(out: Path) -> dict[str, Path]:
    """The three photo folders with their boxes.json (classes as keys: the images' targets).
    Composites put two squares side by side (a 2 : 1 image: the network's square input
    squeezes it half as much as two whole photos)."""
    groups = {"single": out / "single", "same_class": out / "same_class", "two_classes": out / "two_classes"}
    boxes: dict[str, dict] = {group: {} for group in groups}
    for name, (cls, box) in OBJECTS.items():
        save(groups["single"], name, photo(name))
        boxes["single"][f"{name}.png"] = {str(cls): [box]}
    for name in SAME_CLASS:
        crop, (x0, y0, x1, y1) = square(name)
        save(groups["same_class"], f"{name}_twice", np.concatenate([crop, crop[:, ::-1]], axis=1))
        boxes["same_class"][f"{name}_twice.png"] = {
            str(OBJECTS[name][0]): [[x0, y0, x1, y1], [2 * HALF - x1, y0, 2 * HALF - x0, y1]]}
    for name in SMALLER:
        crop, box = square(name)
        side = round(SCALE * HALF)
        offset = (HALF - side) // 2
        small = np.full_like(crop, 127)
        small[offset:offset + side, offset:offset + side] = cv2.resize(crop, (side, side),
                                                                       interpolation=cv2.INTER_AREA)
        save(groups["same_class"], f"{name}_smaller", np.concatenate([crop, small], axis=1))
        boxes["same_class"][f"{name}_smaller.png"] = {str(OBJECTS[name][0]): [
            box, [HALF + offset + round(SCALE * box[0]), offset + round(SCALE * box[1]),
                  HALF + offset + round(SCALE * box[2]), offset + round(SCALE * box[3])]]}
    for left, right in TWO_CLASSES:
        save(groups["two_classes"], f"{left}_{right}", np.concatenate([square(left)[0], square(right)[0]], axis=1))
        boxes["two_classes"][f"{left}_{right}.png"] = {str(OBJECTS[left][0]): [[0, 0, HALF, HALF]],
                                                      str(OBJECTS[right][0]): [[HALF, 0, 2 * HALF, HALF]]}
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
    parser.add_argument("--groups", default="single,same_class,two_classes",
                        help="groups to (re)evaluate; the others' last results are read back")
    args = parser.parse_args()
    for path, extra in ((args.model, []), (args.guided_model, ["--guided"])):
        if not path.is_file():
            onnxcam("export", "efficientnet_lite0", *extra, "-o", path)
    from onnxcam.cli.evaluate import table
    from onnxcam.metrics import METRICS

    columns = [v for name, cls in METRICS.items() for v in cls().values if v.summary]
    lines = []
    for group, folder in build(args.out).items():
        means, counts = {}, {}
        for model, methods in ((args.model, METHODS), (args.guided_model, GUIDED)):
            result = args.out / "results" / f"{group}_{model.stem}"
            if group in args.groups.split(","):
                onnxcam("evaluate", model, folder, "--method", methods, "--boxes",
                        args.out / f"{group}.boxes.json", "-o", result)
            summary = json.loads((result / "metrics.json").read_text())
            for method, data in summary["methods"].items():
                means[method] = {k: float("nan") if v is None else v for k, v in data["means"].items()}
                counts[method] = f"{data['maps'] - data['zero_maps']}/{data['maps']}"
        lines += [f"**{TITLES[group]}**", "", table(means, columns, counts), ""]
    text = "\n".join(lines)
    (args.out / "tables.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
