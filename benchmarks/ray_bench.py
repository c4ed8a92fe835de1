"""``python benchmarks/ray_bench.py``: images per second of ``onnxcam explain`` run locally and
on a local Ray (``--ray``) with 1 and 2 actors at the same total thread count.

Every run is the command a user types, in its own process, writing its overlays, grids and
JSON lines (and with ``--ray`` the Parquet file); contenders alternate run by run. The command
prints one JSON line per image as it finishes, and the bench stamps each line as it arrives:
the rate is the images after the first burst of lines over the time from that burst to the
last line, which leaves out what a run pays once (Python, Ray's start, the actors' sessions),
reported apart as the time to the first line. Ray's per-image overhead is its per-image time
minus the local command's.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.side_by_side import child_env, machine_info  # noqa: E402

DEFAULT_MODEL = "efficientnet_lite0"
BURST = 0.05  # s: lines this close to the first one came with it (one batch's rows arrive together)


def contenders(cores: int) -> list[tuple[str, int, int]]:
    """(name, actors, threads per actor): all at ``cores`` threads in total."""
    return [("local", 0, cores), ("ray", 1, cores), ("ray", 2, max(1, cores // 2))]


def photo_set(folder: Path, count: int) -> list[Path]:
    """``count`` distinct image files: resized and cropped versions of scikit-image photos."""
    import skimage.data

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(),
              skimage.data.rocket(), skimage.data.stereo_motorcycle()[0]]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = 0.4 + 0.6 * ((i * 7) % 10) / 9  # 40 % to 100 % of the photo's size
        top, left = (i * 13) % (h // 5), (i * 29) % (w // 5)
        crop = photo[top:top + h * 4 // 5, left:left + w * 4 // 5]
        image = cv2.resize(crop, (max(16, round(crop.shape[1] * scale)), max(16, round(crop.shape[0] * scale))))
        path = folder / f"{i:05d}.{'jpg' if i % 2 else 'png'}"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def model_path(spec: str) -> Path:
    """The model file; a zoo name missing from models/ is exported there first."""
    from onnxcam.runtime.model_files import resolve_model

    path = resolve_model(spec)
    if not path.is_file():
        print(f"exporting {spec} to models/ (once) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "onnxcam", "export", spec], check=True, cwd=ROOT, env=child_env())
        path = resolve_model(spec)
    return path.resolve()


def run_once(model: Path, images: Path, out: Path, actors: int, threads: int, batch: int) -> dict:
    """One ``onnxcam explain`` run: seconds to the first JSON line and in all, and images per
    second from the first burst of lines (those within BURST s of the first) to the last."""
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "onnxcam", "explain", str(model), str(images), "-o", str(out),
               "--threads", str(threads), "--batch-size", str(batch)]
    if actors:
        command += ["--ray", "--actors", str(actors)]
    start = time.perf_counter()
    with subprocess.Popen(command, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, bufsize=1) as process:
        stamps = [time.perf_counter() for _ in process.stdout]
        error = process.stderr.read()
    if process.returncode != 0 or len(stamps) < 2:
        raise SystemExit(f"ray_bench: {' '.join(command)} failed:\n{error[-2000:]}")
    first = sum(stamp <= stamps[0] + BURST for stamp in stamps)
    rate = (len(stamps) - first) / (stamps[-1] - stamps[0]) if len(stamps) > first else float("nan")
    return {"first": stamps[0] - start, "total": time.perf_counter() - start, "rate": rate}


def load() -> float:
    """The machine's one-minute load average."""
    return os.getloadavg()[0]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model name or .onnx (default {DEFAULT_MODEL})")
    parser.add_argument("--images", type=int, default=400, help="images per run (default 400)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each contender (median; default 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="total threads (default: the cores)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    model = model_path(args.model)
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="onnxcam-ray-bench-") as tmp:
        folder = Path(tmp)
        photo_set(folder / "in", args.images)
        runs = {c: [] for c in contenders(args.threads)}
        loads = [load()]
        for _ in range(args.runs):
            for (name, actors, threads), done in runs.items():
                done.append(run_once(model, folder / "in", folder / "out", actors, threads, args.batch_size))
                loads.append(load())
    print(f"onnxcam explain {model.name} on {info['cpu']}, {info['cores']} cores, onnxruntime "
          f"{info['versions']['onnxruntime']}; {args.images} images (scikit-image photos, 16 px to "
          f"741 px), gradcam, batch {args.batch_size}, {args.runs} run(s) each, medians; one-minute load "
          f"average {min(loads):.1f} to {max(loads):.1f} during the runs")
    print()
    print("| contender | actors x threads | images/s | ms/image | s to first image | s in all |")
    print("|---|---|---|---|---|---|")
    per_image = {}
    for (name, actors, threads), done in runs.items():
        rate, first, total = (statistics.median(run[key] for run in done) for key in ("rate", "first", "total"))
        per_image[(name, actors)] = 1 / rate
        shape = f"{actors} x {threads}" if actors else f"1 process x {threads}"
        print(f"| {name} | {shape} | {rate:.1f} | {1000 / rate:.1f} | {first:.1f} | {total:.1f} |")
    print()
    local = per_image[("local", 0)]
    for (name, actors), seconds in per_image.items():
        if name == "ray":
            print(f"- Ray, {actors} actor(s): {1000 * (seconds - local):+.1f} ms per image against the "
                  f"local command ({seconds / local:.2f}x its per-image time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
