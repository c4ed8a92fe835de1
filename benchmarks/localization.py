"""Box rules chosen by measurement: every method x three pretrained backbones on the
localization set (``localization_set.py``), fitted on its calibration split, scored on its test split.

    python benchmarks/localization.py            # set, exports, run (resumes), page
    python benchmarks/localization.py run [--backbones efficientnet_lite0] [--methods gradcam] [--rerun]
    python benchmarks/localization.py page       # docs/results/localization.md (+ its pictures),
                                                 # which benchmarks/localization_page.py writes

Per backbone and method: the maps of every class of every calibration image, each candidate box
rule's box accuracy on them (``onnxcam.metrics.box_calibration``), and on the test split, per
kind of image, the pointing game, energy-based pointing, MaxBoxAccV2's hit curves and each
candidate rule's IoU >= 0.5 rate. The rule shipped for a method (``SHIPPED_RULES`` in
``onnxcam/render/boxes.py``, kept equal to this file's ``chosen`` by a test) is the candidate
with the best calibration score averaged over the backbones. Costly methods run on a stride of
the cases with fewer samples (``SLOW``), which the page says.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import localization_set  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SET = localization_set.DEFAULT_OUT
MODELS = SET / "models"
RESULTS = HERE / "results" / "localization.json"
PAGE = ROOT / "docs" / "results" / "localization.md"
PICTURES = ROOT / "docs" / "results" / "localization"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# method -> (every n-th case of each split, method options): the costly ones on fewer cases
SLOW = {"scorecam": (40, {}), "occlusion": (20, {}), "smoothgrad": (20, {"samples": 16}),
        "integrated-gradients": (20, {"samples": 16}), "rise": (40, {"samples": 300})}
NOT_ON = {"ablationcam": "EfficientNet-Lite's graph cannot take ablated layer rows (its head "
                         "reshapes by the input's batch): the export leaves `layer_input` out"}
MUST_SHOW = ("mosaic2x2", "cat_espresso")  # the bar: Grad-CAM box IoU >= 0.5 in >= 80 %, pointing >= 90 %


def export(backbone: str) -> Path:
    """The backbone's explain-graph with guided and plain input gradients (every method)."""
    path = MODELS / f"{backbone}.onnx"
    if not path.is_file():
        MODELS.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "onnxcam", "export", backbone, "--guided", "--input-gradient",
                        "-o", str(path)], check=True)
    return path


def kind_of(path: Path) -> str:
    return path.stem.rsplit("_", 1)[0] if path.stem != "cat_espresso" else "cat_espresso"


def test_scores(pairs_by_kind: dict[str, list], rules) -> dict[str, dict]:
    """Per kind: pointing %, energy %, MaxBoxAccV2's mean hit curves, each rule's IoU >= 0.5 rate."""
    from onnxcam.metrics.localization import Localization, box_accuracy_curves, iou, shrunk
    from onnxcam.render.boxes import map_boxes

    metric = Localization()
    out = {}
    for kind, pairs in pairs_by_kind.items():
        one = [metric.one(heat, truth, rules[0]) for heat, truth in pairs]
        curves = np.mean([box_accuracy_curves(heat, truth) for heat, truth in pairs], axis=0)
        hits = {str(rule): 0 for rule in rules}
        for heat, truth in pairs:
            small, boxes = shrunk(heat, truth)
            for rule in rules:
                found = map_boxes(small, rule)
                hits[str(rule)] += bool(found) and max(iou(found[0], t) for t in boxes) >= 0.5
        out[kind] = {"maps": len(pairs), "pointing": float(np.mean([v["pointing"] for v in one])),
                     "energy": float(np.mean([v["energy"] for v in one])), "curves": np.round(curves, 3).tolist(),
                     "box_acc": {rule: 100.0 * n / len(pairs) for rule, n in hits.items()}}
    return out


def run_group(backbone: str, methods: list[str]) -> dict[str, dict]:
    """Calibration and test scores of one backbone for methods that share a stride and options
    (their maps come from one graph run per image)."""
    from onnxcam import Explainer
    from onnxcam.metrics.box_calibration import CANDIDATES, annotated_maps, calibrate
    from onnxcam.metrics.box_files import read_box_folder

    explainer = Explainer(export(backbone))
    stride, options = SLOW.get(methods[0], (1, {}))
    chosen = [explainer.method(method, **options) for method in methods]
    started = time.perf_counter()
    split = {}
    for name in localization_set.SPLITS:
        items = read_box_folder(SET / name, explainer.labels, explainer.num_classes)
        split[name] = items[::stride]
    calibration = annotated_maps(explainer, split["calibration"], chosen)
    by_kind: dict[str, dict[str, list]] = {method: {} for method in methods}
    for item in split["test"]:
        for method, pairs in annotated_maps(explainer, [item], chosen).items():
            by_kind[method].setdefault(kind_of(item.path), []).extend(pairs)
    out = {}
    for method in methods:
        fit = calibrate(calibration[method])
        out[method] = {"calibration": {"images": len(split["calibration"]), "maps": fit.pairs,
                                       "scores": {k: round(v, 3) for k, v in fit.scores.items()}},
                       "test": {"images": len(split["test"]), "kinds": test_scores(by_kind[method], CANDIDATES)},
                       "stride": stride, "options": options}
    seconds = round(time.perf_counter() - started, 1)
    for entry in out.values():
        entry["seconds"] = seconds
    return out


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"runs": {}}


def choose(results: dict) -> dict[str, str]:
    """Per method, the candidate rule with the best calibration score averaged over the backbones."""
    from onnxcam.metrics.box_calibration import CANDIDATES

    chosen = {}
    methods = dict.fromkeys(m for runs in results["runs"].values() for m in runs)
    for method in methods:
        runs = [runs[method] for runs in results["runs"].values() if method in runs]
        mean = {str(rule): np.mean([r["calibration"]["scores"][str(rule)] for r in runs]) for rule in CANDIDATES}
        chosen[method] = str(max(CANDIDATES, key=lambda rule: mean[str(rule)]))
    return chosen


def run(backbones, methods, rerun: bool) -> None:
    from onnxcam.methods.registry import METHODS

    if not (SET / "test").is_dir():
        localization_set.build(SET)
    results = load()
    wanted = [m for m in methods or METHODS if m not in NOT_ON]
    groups = [[m for m in wanted if m not in SLOW]] + [[m] for m in wanted if m in SLOW]
    for backbone in backbones:
        runs = results["runs"].setdefault(backbone, {})
        for group in groups:
            group = [m for m in group if rerun or m not in runs]
            if not group:
                continue
            runs.update(run_group(backbone, group))
            results["chosen"] = choose(results)
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
            print(f"{backbone} {','.join(group)}: {runs[group[0]]['seconds']} s", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", nargs="?", choices=("run", "page"))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--methods", nargs="+")
    parser.add_argument("--rerun", action="store_true", help="run again what the JSON holds")
    args = parser.parse_args(argv)
    if args.step in (None, "run"):
        run(args.backbones, args.methods, args.rerun)
    if args.step in (None, "page"):
        return subprocess.run([sys.executable, str(HERE / "localization_page.py")]).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
