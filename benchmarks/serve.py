"""``python benchmarks/serve.py``: the explain service under load against the library itself.

For each model (random init, exported once to build/serve-bench/NAME.onnx with
``onnxcam export NAME --weights none``):

- the library, in a process of its own: ``Explainer.explain`` on image files in a loop at
  batch sizes 1..16 (decoding included), its best throughput; and one request's worth of
  work in sequence (decode + one batch-1 call + overlay PNG encoding), the floor for a
  one-client latency;
- ``onnxcam serve`` in a subprocess, with ``--max-batch 1`` and with micro-batching
  (the defaults: ``--max-batch 8 --max-wait-ms 10``), loaded by 1, 4 and 16 concurrent keep-alive clients in this
  process, each posting the same JPEG photo (``top_k=1``, gradcam, JSON answer with the
  base64 overlay) for a bounded number of requests over loopback.

Prints one table and the goals, and writes benchmarks/results/serve.json. Every onnxruntime
session runs with sleeping (non-spinning) threads, in the library as in the service.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serving import Client, Server  # noqa: E402
from benchmarks.side_by_side import child_env, cpu_sample, other_cores  # noqa: E402

FULL = {"models": ["resnet50", "squeezenet1_1"], "clients": [1, 4, 16], "requests": 192,
        "batches": [1, 2, 4, 8, 16], "library_seconds": 8.0}
QUICK = {"models": ["squeezenet1_1"], "clients": [1, 4], "requests": 48, "batches": [1, 4],
         "library_seconds": 2.0}
SETUPS = {"--max-batch 1": ["--max-batch", "1"],
          "micro-batching (default --max-batch 8 --max-wait-ms 10)": []}


def export(name: str, folder: Path) -> Path:
    """The explain-graph of ``name`` with random weights, exported once."""
    path = folder / f"{name}.onnx"
    if not path.is_file():
        subprocess.run([sys.executable, "-m", "onnxcam", "export", name, "--weights", "none", "-o", str(path)],
                       check=True, stdout=subprocess.DEVNULL)
    return path


def photo(folder: Path) -> Path:
    """The chelsea photo as a JPEG, as a client would upload it."""
    import cv2
    from skimage import data

    path = folder / "chelsea.jpg"
    if not path.is_file():
        cv2.imwrite(str(path), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    return path


def library_child(model: str, image: str, batches: list[int], seconds: float) -> dict:
    """Run in a fresh process: the library's throughput per batch size, and one request's work."""
    from onnxcam import Explainer
    from onnxcam.images.decode import decode_image
    from onnxcam.render.overlay import encode_png, overlay

    explainer = Explainer(model, spinning=False)
    throughput = {}
    for batch in batches:
        files = [image] * batch
        explainer.explain(files)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 3 * batch:
            explainer.explain(files, batch_size=batch)
            done += batch
        throughput[batch] = done / (time.perf_counter() - start)
    data, times = Path(image).read_bytes(), []
    for _ in range(max(10, int(seconds * 5))):
        start = time.perf_counter()
        decoded = decode_image(data)
        result = explainer.explain(decoded)
        encode_png(overlay(decoded, result.heatmaps[0][0]), level=0)  # as the service does by default
        times.append(time.perf_counter() - start)
    return {"throughput": throughput, "request_ms": statistics.median(times) * 1e3}


def library(model: Path, image: Path, batches: list[int], seconds: float) -> dict:
    """``library_child`` in a fresh interpreter."""
    code = ("import json; from benchmarks.serve import library_child; "
            f"print(json.dumps(library_child({str(model)!r}, {str(image)!r}, {batches!r}, {seconds!r})))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         env=child_env()).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["throughput"] = {int(k): v for k, v in result["throughput"].items()}
    return result


def _batch_totals(client: Client) -> tuple[float, float]:
    """(images, runs) so far, from the server's batch-size histogram."""
    text = client.request("GET", "/metrics").body.decode()
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(("onnxcam_batch_size_sum", "onnxcam_batch_size_count"))}
    return values.get("onnxcam_batch_size_sum", 0.0), values.get("onnxcam_batch_size_count", 0.0)


def load(port: int, image: bytes, clients: int, requests: int) -> dict:
    """``clients`` threads, each with its own connection, posting until ``requests`` are done."""
    latencies, errors, lock = [], [], threading.Lock()
    remaining = [requests]

    def worker():
        client = Client(port)
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            start = time.perf_counter()
            response = client.explain(image, top_k=1)
            elapsed = time.perf_counter() - start
            with lock:
                (latencies if response.status == 200 else errors).append(elapsed)
        client.close()

    probe = Client(port)
    images_before, runs_before = _batch_totals(probe)
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    images, runs = _batch_totals(probe)
    probe.close()
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "throughput": len(latencies) / wall, "p50_ms": statistics.median(ordered) * 1e3,
            "p99_ms": ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] * 1e3,
            "mean_batch": (images - images_before) / max(1.0, runs - runs_before)}


def serve(model: Path, image: bytes, options: list[str], clients: list[int], requests: int, log: Path) -> list[dict]:
    with Server([model, *options, "--no-access-log"], log, env=child_env()) as server:
        load(server.port, image, max(clients), 2 * max(clients))  # warm-up
        return [load(server.port, image, count, max(requests, 4 * count)) for count in clients]


def busy_cores(seconds: float = 1.0) -> Optional[float]:
    """Cores other processes kept busy over ``seconds``; None where /proc/stat is missing."""
    since = cpu_sample()
    time.sleep(seconds)
    return other_cores(since)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: squeezenet1_1, 1 and 4 clients")
    parser.add_argument("--models", help="comma-separated zoo names (default resnet50,squeezenet1_1)")
    parser.add_argument("--clients", help="comma-separated client counts (default 1,4,16)")
    parser.add_argument("--requests", type=int, help="requests per measurement (default 192)")
    parser.add_argument("--folder", default=str(ROOT / "build" / "serve-bench"), help="exported models")
    parser.add_argument("-o", "--output", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = parser.parse_args(argv)
    plan = dict(QUICK if args.quick else FULL)
    if args.models:
        plan["models"] = args.models.split(",")
    if args.clients:
        plan["clients"] = [int(c) for c in args.clients.split(",")]
    if args.requests:
        plan["requests"] = args.requests
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    image_path = photo(folder)
    image = image_path.read_bytes()
    busy = busy_cores()
    rows, results = [], {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "busy_cores_before": None if busy is None else round(busy, 2), "plan": plan, "models": {}}
    for name in plan["models"]:
        model = export(name, folder)
        lib = library(model, image_path, plan["batches"], plan["library_seconds"])
        best = max(lib["throughput"], key=lib["throughput"].get)
        base = lib["throughput"][best]
        entry = {"library": lib, "serve": {}}
        with tempfile.TemporaryDirectory() as logs:
            for label, options in SETUPS.items():
                points = serve(model, image, options, plan["clients"], plan["requests"], Path(logs) / "log")
                entry["serve"][label] = points
                for point in points:
                    rows.append([name, label, str(point["clients"]), f"{point['throughput']:.1f}",
                                 f"{point['throughput'] / base:.2f}", f"{point['p50_ms']:.1f}",
                                 f"{point['p99_ms']:.1f}", f"{point['mean_batch']:.1f}", str(point["errors"])])
        rows.append([name, f"library, batch {best} (best)", "-", f"{base:.1f}", "1.00", "-", "-", str(best), "-"])
        rows.append([name, "library, one request's work", "-", f"{1e3 / lib['request_ms']:.1f}", "-",
                     f"{lib['request_ms']:.1f}", "-", "1", "-"])
        results["models"][name] = entry
    header = ["model", "server", "clients", "req/s", "x library", "p50 ms", "p99 ms", "mean batch", "errors"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for name, entry in results["models"].items():
        lib = entry["library"]
        base = max(lib["throughput"].values())
        for label, points in entry["serve"].items():
            most = max(points, key=lambda p: p["clients"])
            one = min(points, key=lambda p: p["clients"])
            print(f"{name}, {label}: {most['clients']} clients at {most['throughput'] / base:.2f}x the library's "
                  f"throughput (goal >= 0.9); 1 client p50 {one['p50_ms']:.1f} ms = "
                  f"{one['p50_ms'] / lib['request_ms']:.2f}x one request's work in the library (goal <= 1.1)")
    print(f"\nbusy cores before the run (other processes): {'unknown' if busy is None else f'{busy:.2f}'} "
          f"of {os.cpu_count()}")
    Path(args.output).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
