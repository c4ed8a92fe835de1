"""``onnxcam bench`` (= ``python benchmarks/bench.py``): onnxcam against plain inference,
pytorch-grad-cam and Captum, side by side; ``--families`` runs benchmarks/families.py instead.

The parent process exports the model once (a plain ONNX file without explain outputs, an
explain-graph and a guided explain-graph), saves the weights and one input batch, then times
every contender at every batch size in a fresh subprocess (``side_by_side.run_child``), so
onnxruntime's threads never compete with torch's and each peak RSS is the contender's own. By
default no thread busy-waits (OMP_WAIT_POLICY=PASSIVE for torch, ``spinning=False`` for every
onnxruntime session): on a shared machine spinning threads steal each other's CPU, torch's
several times over; ``--spinning`` keeps both libraries' defaults. Torch is imported only by the
functions that need it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import families  # noqa: E402
from benchmarks.bench_report import arithmetic, ratios, ratios_table, results_table, summary  # noqa: E402
from benchmarks.contenders import CONTENDERS, Job  # noqa: E402
from benchmarks.setup_costs import IMPORT_RUNS, import_time, matmul_gflops, prepare, session_start  # noqa: E402
from benchmarks.side_by_side import child_env, command_line, machine_info, run_child  # noqa: E402
from onnxcam.errors import OnnxcamError, first_line  # noqa: E402

# Defaults of the full run and of --quick; options given on the command line override both.
FULL = {"model": "resnet50", "size": 224, "batches": [1, 8], "repeats": 10, "warmup": 2, "budget": 20.0}
QUICK = {"model": "resnet18", "size": 112, "batches": [1, 2], "repeats": 3, "warmup": 1, "budget": 2.0}


def _describe(result: dict) -> str:
    """A progress line's account of one result."""
    if not result["available"]:
        return f"n/a ({result['reason']})"
    others = result["other_cores"]
    return (f"{result['median_ms']:.1f} ms median of {result['repeats']}, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB"
            + ("" if others is None else f", other processes busy on {others:.2f} cores"))


def run_all(config: dict, files: dict[str, str], folder: Path) -> dict[str, dict[str, dict]]:
    """results[contender][batch] for every contender and batch size, printing progress.
    Batch-major, so the contenders a ratio compares run close together in time."""
    results: dict[str, dict[str, dict]] = {name: {} for name in CONTENDERS}
    for batch in config["batches"]:
        for name in CONTENDERS:
            job = Job(contender=name, batch=batch, files=files, **{
                key: config[key] for key in ("threads", "repeats", "warmup", "budget", "model", "layer",
                                             "spinning")})
            result = run_child(job, folder)
            results[name][str(batch)] = result
            print(f"  {name:<34} batch {batch:<3} {_describe(result)}", file=sys.stderr, flush=True)
    return results


# ---------------------------------------------------------------- entry points

def _parser() -> argparse.ArgumentParser:
    """``onnxcam bench``'s options."""
    parser = argparse.ArgumentParser(
        prog="onnxcam bench", description="Time onnxcam against plain onnxruntime inference, "
                                          "pytorch-grad-cam and Captum.",
        epilog="onnxcam bench --families [--models a,b]: Grad-CAM against plain inference for every "
               "model family at its default size (benchmarks/families.py; --families --help)")
    parser.add_argument("--model", help="torchvision model name, random weights with seed 0 "
                                        f"(default {FULL['model']}; --quick {QUICK['model']})")
    parser.add_argument("--layer", default="layer4", help="target layer (default layer4)")
    parser.add_argument("--size", type=int, help=f"input height and width (default {FULL['size']})")
    parser.add_argument("--batches", type=int, nargs="+", metavar="N",
                        help=f"batch sizes (default {' '.join(map(str, FULL['batches']))})")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    parser.add_argument("--repeats", type=int, help=f"timed runs (default {FULL['repeats']})")
    parser.add_argument("--warmup", type=int, help=f"untimed warm-up runs (default {FULL['warmup']})")
    parser.add_argument("--budget", type=float, help="seconds of timed runs per contender and batch "
                        f"before repeats are cut (default {FULL['budget']:g})")
    parser.add_argument("--spinning", action="store_true",
                        help="let torch's OpenMP and onnxruntime's threads busy-wait as they do by "
                             "default (fastest on an idle machine; skewed on a shared one)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: resnet18 at 112, batches 1 and 2, 3 repeats")
    parser.add_argument("--json", default="benchmarks/results/bench.json", metavar="PATH",
                        help="where to write the results (default benchmarks/results/bench.json)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the exported files here (default: a temporary folder)")
    return parser


def _config(args: argparse.Namespace) -> dict:
    """The options in effect: command line over --quick defaults over full defaults."""
    config = dict(QUICK if args.quick else FULL, threads=args.threads, layer=args.layer,
                  quick=args.quick, spinning=args.spinning,
                  omp_wait_policy=child_env(args.spinning).get("OMP_WAIT_POLICY", "unset"))
    config.update({k: v for k in FULL if (v := getattr(args, k)) is not None})
    if min(config["batches"]) < 1 or config["threads"] < 1 or config["repeats"] < 1 or config["size"] < 1:
        raise OnnxcamError("--batches, --threads, --repeats and --size must be at least 1")
    if config["warmup"] < 0 or config["budget"] <= 0:
        raise OnnxcamError("--warmup must be at least 0 and --budget positive")
    return config


@contextmanager
def _folder(workdir: Optional[str]) -> Iterator[Path]:
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="onnxcam-bench-") as folder:
            yield Path(folder)


def _require_export() -> None:
    missing = [name for name in ("torch", "torchvision", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxcamError(f"bench needs {', '.join(missing)}: pip install 'onnxcam[export,test]'")


def run_bench(args: argparse.Namespace) -> int:
    """Run the benchmark, print its tables, write the JSON; 1 if a contender failed."""
    config = _config(args)
    _require_export()
    report = {"command": command_line(), "config": config, "machine": machine_info()}
    print(f"onnxcam bench: {config['model']}, {config['size']}×{config['size']}, batches "
          f"{config['batches']}, {config['threads']} threads", file=sys.stderr, flush=True)
    report["import"] = import_time(3 if config["quick"] else IMPORT_RUNS)
    with _folder(args.workdir) as folder:
        files, report["export"] = prepare(config, folder)
        report["session_start"] = session_start(files)
        matmul = matmul_gflops(config["threads"])
        report["results"] = run_all(config, files, folder)
    report["arithmetic"] = arithmetic(report["export"]["forward_gflop"], matmul, report["results"])
    report["ratios"] = ratios(report["results"], config["batches"], report["arithmetic"]["ms_per_forward_pass"])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(results_table(report) + [""] + ratios_table(report) + [""] + summary(report)))
    failed = any(r.get("error") for row in report["results"].values() for r in row.values())
    return 1 if failed else 0


def main(argv: Optional[list[str]] = None) -> int:
    """The command line; ``--families ...`` runs the family benchmark (benchmarks/families.py)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--families"]:
            return families.run(families.parser().parse_args(argv[1:]))
        return run_bench(_parser().parse_args(argv))
    except OnnxcamError as error:
        print(f"bench: error: {first_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
