"""``onnxcam bench`` (= ``python benchmarks/bench.py``): onnxcam against plain inference,
pytorch-grad-cam and Captum, side by side.

The parent process exports the model once (a plain ONNX file without explain outputs, an
explain-graph and a guided explain-graph), saves the weights and one input batch, then times
every contender at every batch size in a fresh subprocess (``python benchmarks/bench.py --child
JOB RESULT``), so onnxruntime's threads never compete with torch's and each peak RSS is the
contender's own. By default no thread busy-waits (OMP_WAIT_POLICY=PASSIVE for torch,
``spinning=False`` for every onnxruntime session): on a shared machine
spinning threads steal each other's CPU, torch's several times over; ``--spinning`` keeps
both libraries' defaults. Torch is imported only by the functions that need it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from onnxcam.errors import OnnxcamError, first_line

PLAIN = "onnxruntime plain"
CPU = ["CPUExecutionProvider"]
MB = 1e6
# Defaults of the full run and of --quick; options given on the command line override both.
FULL = {"model": "resnet50", "size": 224, "batches": [1, 8], "repeats": 10, "warmup": 2, "budget": 20.0}
QUICK = {"model": "resnet18", "size": 112, "batches": [1, 2], "repeats": 3, "warmup": 1, "budget": 2.0}
MIN_REPEATS = 3
BUSY = 0.1  # cores other processes keep busy on average above which a run is called shared
IMPORT_RUNS = 5


class Unavailable(Exception):
    """A contender that cannot run here (library missing, method not in this onnxcam)."""


@dataclass
class Job:
    """What one child process times: one contender at one batch size."""

    contender: str
    batch: int
    threads: int
    repeats: int
    warmup: int
    budget: float
    model: str
    layer: str
    spinning: bool
    files: dict[str, str]


Runner = Callable[[], object]


# ---------------------------------------------------------------- contenders (child side)

def _batch(job: Job) -> np.ndarray:
    return np.ascontiguousarray(np.load(job.files["input"])[:job.batch])


def _plain(job: Job) -> Runner:
    """onnxruntime inference of the model exported without explain outputs, with the session
    options onnxcam's own sessions use."""
    import onnxruntime as ort

    from onnxcam.session import session_options

    session = ort.InferenceSession(job.files["plain"], session_options(job.threads, job.spinning), providers=CPU)
    feed = {session.get_inputs()[0].name: _batch(job)}
    return lambda: session.run(None, feed)


def _onnxcam(method: str, graph: str, job: Job) -> Runner:
    """onnxcam end to end: normalized batch in, final maps at input resolution out. A first
    call (an extra warm-up) finds out whether this onnxcam has the method."""
    from onnxcam.explainer import Explainer

    explainer = Explainer(job.files[graph], providers=CPU, threads=job.threads, spinning=job.spinning)
    x = _batch(job)

    def run():
        return explainer.explain(x, method=method, normalized=True, batch_size=len(x))

    try:
        run()
    except OnnxcamError as error:
        if str(error).startswith("method:"):
            raise Unavailable(str(error)) from None
        raise
    return run


def _torch_model(job: Job):
    """The benchmark model with the parent's weights, and the input batch as a tensor."""
    import torch
    import torchvision

    torch.set_num_threads(job.threads)
    model = torchvision.models.get_model(job.model, weights=None)
    model.load_state_dict(torch.load(job.files["weights"], weights_only=True))
    return model.eval(), torch.from_numpy(_batch(job))


def _top_classes(model, x):
    """The predicted classes, computed once outside the timed region (favours Captum)."""
    import torch

    with torch.no_grad():
        return model(x).argmax(1)


def _explain_graph(job: Job) -> Runner:
    """The explain-graph ``files["explain"]`` run alone, every output fetched: the top class of
    each image as the target, an empty ``layer_input`` where the file has one."""
    import onnxruntime as ort

    from onnxcam.session import session_options

    session = ort.InferenceSession(job.files["explain"], session_options(job.threads, job.spinning), providers=CPU)
    x = _batch(job)
    values = {"input": x, "targets": np.full((len(x), 1), -1, np.int64)}
    feed = {spec.name: values[spec.name] if spec.name in values else np.zeros([0, *spec.shape[1:]], np.float32)
            for spec in session.get_inputs()}
    return lambda: session.run(None, feed)


def _pytorch_grad_cam(name: str, job: Job) -> Runner:
    """pytorch-grad-cam as its README uses it: targets=None explains the top class. The
    target module ``layer4`` gives the same activations as the README's ``layer4[-1]``."""
    try:
        import pytorch_grad_cam
    except ImportError:
        raise Unavailable("pytorch-grad-cam is not installed (pip install grad-cam)") from None
    model, x = _torch_model(job)
    cam = getattr(pytorch_grad_cam, name)(model=model, target_layers=[model.get_submodule(job.layer)])
    return lambda: cam(input_tensor=x, targets=None)


def _captum(job: Job):
    """Captum's ``attr`` module, the model, the input and its predicted classes."""
    try:
        from captum import attr
    except ImportError:
        raise Unavailable("captum is not installed (pip install captum)") from None
    model, x = _torch_model(job)
    return attr, model, x, _top_classes(model, x)


def _captum_layer_gradcam(job: Job) -> Runner:
    """Captum LayerGradCam with ReLU, bilinearly interpolated to the input size."""
    attr, model, x, target = _captum(job)
    cam = attr.LayerGradCam(model, model.get_submodule(job.layer))
    size = tuple(x.shape[-2:])
    return lambda: attr.LayerAttribution.interpolate(
        cam.attribute(x, target=target, relu_attributions=True), size, "bilinear")


def _captum_guided_gradcam(job: Job) -> Runner:
    """Captum GuidedGradCam: guided backprop times the upsampled layer Grad-CAM."""
    attr, model, x, target = _captum(job)
    cam = attr.GuidedGradCam(model, model.get_submodule(job.layer))
    return lambda: cam.attribute(x, target=target)


CONTENDERS: dict[str, Callable[[Job], Runner]] = {
    PLAIN: _plain,
    "onnxcam gradcam": partial(_onnxcam, "gradcam", "explain"),
    "onnxcam gradcam++": partial(_onnxcam, "gradcam++", "explain"),
    "onnxcam layercam": partial(_onnxcam, "layercam", "explain"),
    "onnxcam guided-gradcam": partial(_onnxcam, "guided-gradcam", "guided"),
    "pytorch-grad-cam GradCAM": partial(_pytorch_grad_cam, "GradCAM"),
    "pytorch-grad-cam GradCAMPlusPlus": partial(_pytorch_grad_cam, "GradCAMPlusPlus"),
    "captum LayerGradCam": _captum_layer_gradcam,
    "captum GuidedGradCam": _captum_guided_gradcam,
}
# contenders that only ``interleave``'s callers time, not ``onnxcam bench``
PROBES: dict[str, Callable[[Job], Runner]] = {"explain-graph": _explain_graph}


def _peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM on Linux (ru_maxrss would carry the
    parent's peak over fork and exec), else ru_maxrss (KiB, bytes on macOS)."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) * 1024 / MB
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * (1 if sys.platform == "darwin" else 1024) / MB


def _timings(run: Runner, job: Job) -> list[float]:
    """Seconds per run after ``job.warmup`` warm-up runs; slow contenders get fewer repeats
    (at least MIN_REPEATS) so that the timed runs fit roughly in ``job.budget`` seconds."""
    start = time.perf_counter()
    for _ in range(job.warmup):
        run()
    per_run = (time.perf_counter() - start) / max(job.warmup, 1)
    repeats = min(job.repeats, max(MIN_REPEATS, int(job.budget / max(per_run, 1e-9))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _set_up(job: Job) -> tuple[Optional[Runner], dict]:
    """The contender's runner (None where it cannot run here) and what its setup reports."""
    start = time.perf_counter()
    try:
        run = {**CONTENDERS, **PROBES}[job.contender](job)
    except Unavailable as why:
        return None, {"available": False, "reason": str(why)}
    return run, {"available": True, "setup_s": time.perf_counter() - start}


def _summary(times: list[float]) -> dict:
    """Median and fastest run in milliseconds, and how many runs."""
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "repeats": len(times)}


def _measure(job: Job) -> dict:
    """Set up and time one contender; the result the parent reads back."""
    run, report = _set_up(job)
    if run is None:
        return report
    return {**report, **_summary(_timings(run, job)), "peak_rss_mb": _peak_rss_mb()}


def _child(job_json: str, result_path: str) -> int:
    warnings.simplefilter("ignore")
    result = _measure(Job(**json.loads(job_json)))
    Path(result_path).write_text(json.dumps(result))
    return 0


def _turns(job_json: str) -> int:
    """Child of ``interleave``: set up one contender and say so, then for each count read from
    stdin time that many runs and write their seconds; at the end, the peak RSS. Replies go to
    the original stdout; anything the libraries print goes to stderr."""
    warnings.simplefilter("ignore")
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def reply(value) -> None:
        replies.write(json.dumps(value) + "\n")
        replies.flush()

    run, report = _set_up(Job(**json.loads(job_json)))
    reply(report)
    if run is None:
        return 0
    for line in sys.stdin:
        try:
            reply([_timed(run) for _ in range(int(line))])
        except Exception as error:  # whatever the contender's library raises
            reply({"error": f"{type(error).__name__}: {first_line(error)}"})
            return 1
    reply({"peak_rss_mb": _peak_rss_mb()})
    return 0


# ---------------------------------------------------------------- preparation (parent side)

def _env(spinning: bool = True) -> dict[str, str]:
    """Environment for children: this onnxcam importable even when it is not installed and,
    unless ``spinning`` or the caller set it, OMP_WAIT_POLICY=PASSIVE."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**({} if spinning else {"OMP_WAIT_POLICY": "PASSIVE"}), **os.environ,
            "PYTHONPATH": root + (os.pathsep + path if path else "")}


def machine_info() -> dict:
    """CPU, cores, OS and library versions."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for package in ("onnxruntime", "torch", "torchvision", "numpy", "grad-cam", "captum"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "versions": versions}


def import_time(runs: int = IMPORT_RUNS) -> dict:
    """Median seconds of ``import onnxcam`` and of ``import onnxcam.explainer`` (which loads
    onnxruntime) in fresh interpreters, and whether either import pulled in torch."""
    code = ("import sys, time, json; t = time.perf_counter(); import onnxcam; "
            "a = time.perf_counter() - t; torch = 'torch' in sys.modules; import onnxcam.explainer; "
            "print(json.dumps([a, time.perf_counter() - t, torch, 'torch' in sys.modules]))")
    samples = [json.loads(subprocess.run([sys.executable, "-c", code], env=_env(), check=True,
                                         capture_output=True, text=True).stdout)
               for _ in range(runs)]
    return {"onnxcam_s": statistics.median(s[0] for s in samples),
            "explainer_s": statistics.median(s[1] for s in samples),
            "runs": runs, "torch_after_import": any(s[2] for s in samples),
            "torch_after_explainer_import": any(s[3] for s in samples)}


def session_start(files: dict[str, str], runs: int = 3) -> dict:
    """Median seconds to open each explain-graph: optimized at load, and from the optimized
    graph ``cache=True`` saves beside it (the first cached open writes it, untimed)."""
    from onnxcam.session import open_session

    def median(path: str, cache: bool) -> float:
        return statistics.median(_timed(lambda: open_session(path, CPU, cache=cache)) for _ in range(runs))

    report = {}
    for name in ("explain", "guided"):
        open_session(files[name], CPU, cache=True)
        report[name] = {"fresh_s": median(files[name], False), "cached_s": median(files[name], True)}
    return report


def _export_plain(model, x, path: Path) -> None:
    """The model alone, exported as the explain-graph is (dynamo, opset 18, IR <= 10)."""
    import onnx
    import torch

    from onnxcam_export.exporter import MAX_IR_VERSION

    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, verbose=False,
                                input_names=["input"], output_names=["logits"],
                                dynamic_shapes=({0: torch.export.Dim("N")},))
    proto = program.model_proto
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    onnx.save(proto, str(path))


def forward_gflop(model, size: tuple[int, int]) -> float:
    """Floating-point operations (a multiply-add counts two) of one image's forward pass, in billions."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, *size))
    return counter.get_total_flops() / 1e9


def matmul_gflops(threads: int, side: int = 2048, runs: int = 10) -> float:
    """onnxruntime's own float32 matrix product rate (GFLOP/s, median of ``runs``) on a
    side×side product with ``threads`` threads: the arithmetic ceiling of its convolutions."""
    import onnxruntime as ort
    from onnx import TensorProto, helper


    from onnxcam_export.exporter import MAX_IR_VERSION
    from onnxcam.session import session_options

    square = [side, side]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, square) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, square)])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = MAX_IR_VERSION
    session = ort.InferenceSession(proto.SerializeToString(), session_options(threads, spinning=False),
                                   providers=CPU)
    feed = {name: np.random.default_rng(0).standard_normal(square, np.float32) for name in ("a", "b")}
    session.run(None, feed)
    seconds = statistics.median(_timed(lambda: session.run(None, feed)) for _ in range(runs))
    return 2 * side ** 3 / seconds / 1e9


def _timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def prepare(config: dict, folder: Path) -> tuple[dict[str, str], dict]:
    """Export the three ONNX files (each explain-graph checked against torch, as ``export``
    always does) and save weights and input; returns (paths, export report)."""
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    try:
        model = torchvision.models.get_model(config["model"], weights=None).eval()
    except ValueError as error:
        raise OnnxcamError(f"--model: {first_line(error)}") from None
    size = (config["size"], config["size"])
    files = {name: str(folder / f"{name}.onnx") for name in ("plain", "explain", "guided")}
    files.update(weights=str(folder / "weights.pt"), input=str(folder / "input.npy"))
    torch.save(model.state_dict(), files["weights"])
    x = np.random.default_rng(0).standard_normal((max(config["batches"]), 3, *size), np.float32)
    np.save(files["input"], x)
    with warnings.catch_warnings(), redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        seconds = {  # in this order: the first export also pays for loading torch.onnx
            "explain": _timed(lambda: export(model, files["explain"], [config["layer"]], input_size=size)),
            "guided": _timed(lambda: export(model, files["guided"], [config["layer"]], input_size=size,
                                            guided=True)),
            "plain": _timed(lambda: _export_plain(model, torch.randn(2, 3, *size), Path(files["plain"]))),
        }
    sizes = {name: os.path.getsize(files[name]) / MB for name in seconds}
    return files, {"seconds": seconds, "size_mb": sizes, "forward_gflop": forward_gflop(model, size),
                   "size_ratio": {name: sizes[name] / sizes["plain"] for name in ("explain", "guided")}}


# ---------------------------------------------------------------- running (parent side)

CpuSample = tuple[float, float, float]  # wall clock, busy CPU seconds of the machine, of ours


def cpu_sample() -> Optional[CpuSample]:
    """Now, the machine's busy CPU seconds (steal included) from /proc/stat, and those of
    this process and its finished children; None where /proc/stat is missing."""
    try:
        with open("/proc/stat") as handle:
            user, nice, system, _, _, irq, softirq, steal = map(int, handle.readline().split()[1:9])
    except (OSError, ValueError):
        return None
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return (time.perf_counter(), (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            sum(u.ru_utime + u.ru_stime for u in usage))


def other_cores(since: Optional[CpuSample]) -> Optional[float]:
    """How many cores other processes (and the hypervisor) kept busy on average since ``since``."""
    now = cpu_sample()
    if since is None or now is None:
        return None
    wall, machine, ours = (a - b for a, b in zip(now, since))
    return max(0.0, machine - ours) / wall if wall > 0 else None


def last_line(stderr: str, returncode: int) -> str:
    """Why a child process failed: the last line it wrote to stderr, else its exit status."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {returncode}"


def run_child(job: Job, folder: Path) -> dict:
    """Time one contender at one batch size in a fresh interpreter."""
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    command = [sys.executable, __file__, "--child", json.dumps(asdict(job)), str(result_path)]
    start = cpu_sample()
    done = subprocess.run(command, env=_env(job.spinning), capture_output=True, text=True)
    if done.returncode != 0 or not result_path.is_file():
        return {"available": False, "reason": f"failed: {last_line(done.stderr, done.returncode)}", "error": True}
    return {**json.loads(result_path.read_text()), "other_cores": other_cores(start)}


class _Turn:
    """One ``interleave`` child: a fresh interpreter timing one contender on request."""

    def __init__(self, job: Job, folder: Path):
        self.errors = open(folder / f"turn-{len(list(folder.glob('turn-*')))}.err", "w+")
        self.process = subprocess.Popen([sys.executable, __file__, "--turns", json.dumps(asdict(job))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                        env=_env(job.spinning), text=True)
        self.times, self.turns = [], 0

    def _failed(self) -> OnnxcamError:
        """The child's end, in the last line it wrote to stderr."""
        self.process.kill()
        self.process.wait()
        self.errors.seek(0)
        return OnnxcamError(f"failed: {last_line(self.errors.read(), self.process.returncode)}")

    def read(self):
        try:
            value = json.loads(self.process.stdout.readline())
        except ValueError:  # an empty line (the child ended) or not one of its replies
            raise self._failed() from None
        if isinstance(value, dict) and "error" in value:
            self.process.wait()
            raise OnnxcamError(f"failed: {value['error']}")
        return value

    def timed(self, count: int) -> list[float]:
        """Seconds of each of ``count`` runs."""
        try:
            self.process.stdin.write(f"{count}\n")
            self.process.stdin.flush()
        except OSError:  # the child ended
            raise self._failed() from None
        return self.read()

    def take_turn(self, count: int) -> None:
        self.times += self.timed(count)
        self.turns += 1

    def finish(self) -> dict:
        self.process.stdin.close()
        peak = self.read()["peak_rss_mb"]
        return {"available": True, **_summary(self.times), "turns": self.turns, "peak_rss_mb": peak}

    def close(self) -> None:
        try:
            if not self.process.stdin.closed:
                self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self.errors.close()


def interleave(jobs: dict[str, Job], folder: Path, turn_s: float = 0.25) -> dict[str, dict]:
    """Time contenders side by side, each in its own fresh interpreter: all are set up, each
    warms up in turn (so its time per run, which sizes its turns, is its own), then they take
    turns at about ``turn_s`` seconds of runs each until every one has its ``repeats`` runs
    (fewer, at least MIN_REPEATS, where they would take over its ``budget`` seconds), so that a
    noisy spell on a shared machine falls on all of them. Returns each contender's result; one
    that fails is unavailable with the reason, and the others go on."""
    turns = {label: _Turn(job, folder) for label, job in jobs.items()}
    results: dict[str, dict] = {}
    plan: dict[str, tuple[int, int]] = {}  # label: (runs in all, runs per turn)

    def failed(label: str, error: OnnxcamError) -> None:
        results[label] = {"available": False, "reason": str(error), "error": True}
        plan.pop(label, None)

    try:
        for label, turn in turns.items():
            try:
                ready = turn.read()
                if not ready["available"]:
                    results[label] = ready
                    continue
                per_run = max(statistics.mean(turn.timed(max(jobs[label].warmup, 1))), 1e-9)
            except OnnxcamError as error:
                failed(label, error)
                continue
            job = jobs[label]
            total = min(job.repeats, max(MIN_REPEATS, int(job.budget / per_run)))
            plan[label] = (total, max(1, min(total, round(turn_s / per_run))))
        while plan:
            for label, (total, burst) in list(plan.items()):
                turn = turns[label]
                try:
                    turn.take_turn(min(burst, total - len(turn.times)))
                    if len(turn.times) >= total:
                        results[label] = turn.finish()
                        del plan[label]
                except OnnxcamError as error:
                    failed(label, error)
    finally:
        for turn in turns.values():
            turn.close()
    return {label: results[label] for label in jobs}


def _describe(result: dict) -> str:
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


# (label, numerator contender, denominator contender, measure, target as (comparison, bound))
RATIOS = [
    ("onnxcam gradcam / plain", "onnxcam gradcam", PLAIN, "median_ms", ("<=", 1.10)),
    ("onnxcam gradcam++ / plain", "onnxcam gradcam++", PLAIN, "median_ms", None),
    ("onnxcam layercam / plain", "onnxcam layercam", PLAIN, "median_ms", None),
    ("onnxcam guided-gradcam / plain", "onnxcam guided-gradcam", PLAIN, "median_ms", ("<=", 2.5)),
    ("pytorch-grad-cam GradCAM / onnxcam gradcam", "pytorch-grad-cam GradCAM",
     "onnxcam gradcam", "median_ms", (">=", 8.0)),
    ("pytorch-grad-cam GradCAMPlusPlus / onnxcam gradcam++", "pytorch-grad-cam GradCAMPlusPlus",
     "onnxcam gradcam++", "median_ms", None),
    ("captum LayerGradCam / onnxcam gradcam", "captum LayerGradCam", "onnxcam gradcam",
     "median_ms", (">=", 2.0)),
    ("captum GuidedGradCam / onnxcam guided-gradcam", "captum GuidedGradCam",
     "onnxcam guided-gradcam", "median_ms", (">=", 3.0)),
    ("peak RSS onnxcam gradcam / plain", "onnxcam gradcam", PLAIN, "peak_rss_mb", ("<=", 1.3)),
]


# The least arithmetic each onnxcam contender must do, in forward passes: a map at the last
# layer needs the forward only; guided backpropagation also needs every convolution's input
# gradient, which costs what the convolution does.
FORWARD_PASSES = {"onnxcam gradcam": 1, "onnxcam gradcam++": 1, "onnxcam layercam": 1,
                  "onnxcam guided-gradcam": 2}


def ratios(results: dict[str, dict[str, dict]], batches: list[int],
           floor_ms_per_pass: Optional[float] = None) -> list[dict]:
    """Every ratio of RATIOS at every batch size; value None where a side is n/a. With
    ``floor_ms_per_pass`` (one image's forward pass at the fastest rate measured here),
    a peer-over-onnxcam ratio also gets its ceiling: the peer's time over the least time
    onnxcam's arithmetic could take."""
    rows = []
    for label, top, bottom, measure, target in RATIOS:
        for batch in map(str, batches):
            a, b = results[top][batch], results[bottom][batch]
            value = a[measure] / b[measure] if a["available"] and b["available"] else None
            ok = None if value is None or target is None else (
                value <= target[1] if target[0] == "<=" else value >= target[1])
            ceiling = None
            if value is not None and floor_ms_per_pass and measure == "median_ms" and bottom in FORWARD_PASSES:
                ceiling = a[measure] / (FORWARD_PASSES[bottom] * int(batch) * floor_ms_per_pass)
            rows.append({"ratio": label, "batch": int(batch), "value": value, "ceiling": ceiling,
                         "target": f"{target[0]} {target[1]}" if target else None, "ok": ok})
    return rows


# ---------------------------------------------------------------- report

def _cell(result: dict, measure: str, digits: int) -> str:
    return f"{result[measure]:.{digits}f}" if result["available"] else "n/a"


def results_table(report: dict) -> list[str]:
    """Markdown table: median ms, multiple of plain inference and peak RSS per batch size."""
    batches = [str(b) for b in report["config"]["batches"]]
    results = report["results"]
    header = (["contender"] + [f"ms, batch {b}" for b in batches] + [f"× plain, batch {b}" for b in batches]
              + [f"peak RSS MB, batch {b}" for b in batches])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results.items():
        times = [_cell(row[b], "median_ms", 1) for b in batches]
        multiples = [f"{row[b]['median_ms'] / results[PLAIN][b]['median_ms']:.2f}"
                     if row[b]["available"] and results[PLAIN][b]["available"] else "n/a"
                     for b in batches]
        rss = [_cell(row[b], "peak_rss_mb", 0) for b in batches]
        lines.append("| " + " | ".join([name] + times + multiples + rss) + " |")
    return lines


def ratios_table(report: dict) -> list[str]:
    """Markdown table of the ratios that matter, each batch size against its target."""
    batches = report["config"]["batches"]
    lines = ["| ratio | " + " | ".join(f"batch {b}" for b in batches) + " | target |",
             "|" + "---|" * (len(batches) + 2)]
    by_label: dict[str, list[dict]] = {}
    for row in report["ratios"]:
        by_label.setdefault(row["ratio"], []).append(row)
    for label, rows in by_label.items():
        cells = ["n/a" if r["value"] is None else
                 f"{r['value']:.2f}" + ("" if r["ok"] is None else " ✓" if r["ok"] else " ✗")
                 + ("" if r.get("ceiling") is None else f" (ceiling {r['ceiling']:.1f})")
                 for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {rows[0]['target'] or '—'} |")
    return lines


def _contention_line(results: dict[str, dict[str, dict]]) -> str:
    """How busy other processes kept the machine while the contenders ran."""
    measured = [(r["other_cores"], f"{name}, batch {batch}") for name, row in results.items()
                for batch, r in row.items() if r.get("other_cores") is not None]
    if not measured:
        return "- other processes' CPU use during the timings: unknown"
    worst = max(measured)
    mean = statistics.mean(cores for cores, _ in measured)
    verdict = ("shared: the timings include contention" if mean > BUSY else "otherwise idle")
    return (f"- other processes kept {mean:.2f} cores busy on average while the contenders ran "
            f"(most {worst[0]:.2f}, during {worst[1]}): the machine was {verdict}")


def arithmetic(forward_gflop: float, matmul_gflops: float, results: dict[str, dict[str, dict]]) -> dict:
    """The rates float32 work reached here (GFLOP/s): onnxruntime's matrix product, plain
    inference and each onnxcam contender's least arithmetic per batch size. The fastest of
    them sets each ratio's ceiling, so that no measured ratio can pass its ceiling."""
    passes = {PLAIN: 1, **FORWARD_PASSES}
    reached = {name: {batch: passes[name] * forward_gflop * int(batch) / (r["median_ms"] / 1e3)
                      for batch, r in results[name].items() if r["available"]}
               for name in passes}
    fastest = max([matmul_gflops, *(rate for rates in reached.values() for rate in rates.values())])
    return {"forward_gflop": forward_gflop, "matmul_gflops": matmul_gflops, "gflops": reached,
            "fastest_gflops": fastest, "ms_per_forward_pass": 1e3 * forward_gflop / fastest}


def _arithmetic_line(report: dict) -> str:
    """The forward pass's arithmetic, the rates reached, and how the ceilings follow."""
    numbers = report["arithmetic"]
    reached = ", ".join(f"{rate:.0f} at batch {b}" for b, rate in numbers["gflops"][PLAIN].items())
    passes = ", ".join(f"{name.split()[-1]} {n}" for name, n in FORWARD_PASSES.items())
    return (f"- arithmetic: the forward pass is {numbers['forward_gflop']:.2f} GFLOP per image; plain "
            f"inference ran at {reached} GFLOP/s, onnxruntime's float32 matrix product (2048², same "
            f"threads) at {numbers['matmul_gflops']:.0f}, the fastest float32 work in this run at "
            f"{numbers['fastest_gflops']:.0f}. A ratio's ceiling is the peer's time over onnxcam's least "
            f"arithmetic (forward passes: {passes}) at that fastest rate")


def summary(report: dict) -> list[str]:
    """Export, file size, import time, machine and method lines."""
    config, export, imports, machine = (report[k] for k in ("config", "export", "import", "machine"))
    seconds, size, ratio = export["seconds"], export["size_mb"], export["size_ratio"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    repeats = f"median of {config['repeats']} timed runs after {config['warmup']} warm-up run(s)"
    if config["repeats"] > MIN_REPEATS:
        repeats += f" (at least {MIN_REPEATS} where {config['repeats']} would take over {config['budget']:g} s)"
    return [
        f"- export of {config['model']} at {config['size']}×{config['size']} (checked against torch): "
        f"explain-graph {seconds['explain']:.1f} s, guided {seconds['guided']:.1f} s; "
        f"plain torch.onnx export {seconds['plain']:.1f} s",
        _arithmetic_line(report),
        f"- file size: plain {size['plain']:.1f} MB, explain-graph {size['explain']:.1f} MB "
        f"({ratio['explain']:.3f}×), guided {size['guided']:.1f} MB ({ratio['guided']:.3f}×)",
        "- session start (median of 3), optimized at load → from the `cache=True` graph: "
        + "; ".join(f"{name} {1e3 * t['fresh_s']:.0f} → {1e3 * t['cached_s']:.0f} ms"
                    for name, t in report["session_start"].items()),
        f"- `import onnxcam`: {1e3 * imports['onnxcam_s']:.0f} ms; with `onnxcam.explainer` "
        f"(onnxruntime, OpenCV) {1e3 * imports['explainer_s']:.0f} ms (median of {imports['runs']} "
        f"fresh interpreters); torch in sys.modules: {'yes' if imports['torch_after_import'] else 'no'}",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}, Python "
        f"{machine['python']}; {versions}",
        _contention_line(report["results"]),
        f"- {config['threads']} intra-op threads everywhere; waiting threads "
        + (f"spin (library defaults, OMP_WAIT_POLICY {config['omp_wait_policy']})" if config["spinning"]
           else f"sleep (OMP_WAIT_POLICY={config['omp_wait_policy']}, onnxruntime allow_spinning=0)")
        + f"; each contender and batch size in a fresh process, {repeats}",
        f"- command: `{report['command']}`",
    ]


# ---------------------------------------------------------------- entry points

def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options (shared by ``onnxcam bench`` and ``benchmarks/bench.py``)."""
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
    parser.add_argument("--json", default="benchmarks/results.json", metavar="PATH",
                        help="where to write the results (default benchmarks/results.json)")
    parser.add_argument("--workdir", metavar="DIR",
                        help="keep the exported files here (default: a temporary folder)")


def _config(args: argparse.Namespace) -> dict:
    """The options in effect: command line over --quick defaults over full defaults."""
    config = dict(QUICK if args.quick else FULL, threads=args.threads, layer=args.layer,
                  quick=args.quick, spinning=args.spinning,
                  omp_wait_policy=_env(args.spinning).get("OMP_WAIT_POLICY", "unset"))
    config.update({k: v for k in FULL if (v := getattr(args, k)) is not None})
    if min(config["batches"]) < 1 or config["threads"] < 1 or config["repeats"] < 1 or config["size"] < 1:
        raise OnnxcamError("--batches, --threads, --repeats and --size must be at least 1")
    if config["warmup"] < 0 or config["budget"] <= 0:
        raise OnnxcamError("--warmup must be at least 0 and --budget positive")
    return config


def _command() -> str:
    """The command line that started this run, as a user would type it."""
    script = sys.argv[0]
    program = f"python {os.path.relpath(script)}" if script.endswith(".py") else Path(script).name
    return " ".join([program, *sys.argv[1:]])


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
    report = {"command": _command(), "config": config, "machine": machine_info()}
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
    """The command line; ``--child JOB RESULT`` times one contender (run by ``run_child``),
    ``--families ...`` runs the family benchmark (benchmarks/families.py)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(*argv[1:])
    if argv[:1] == ["--turns"]:
        return _turns(*argv[1:])
    if argv[:1] == ["--families"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from benchmarks.families import main as families

        return families(argv[1:])
    parser = argparse.ArgumentParser(
        prog="onnxcam bench", description="Time onnxcam against plain onnxruntime inference, "
                                          "pytorch-grad-cam and Captum.",
        epilog="onnxcam bench --families [--models a,b]: Grad-CAM against plain inference for every "
               "model family at its default size (benchmarks/families.py; --families --help)")
    add_bench_arguments(parser)
    try:
        return run_bench(parser.parse_args(argv))
    except OnnxcamError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
