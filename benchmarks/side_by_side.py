"""Contenders timed side by side, each in a fresh interpreter of its own, so that onnxruntime's
threads never compete with torch's and each peak RSS is the contender's own.

Two ways: ``run_child`` times one contender in one process (its medians written back as JSON);
``interleave`` starts every contender's process and lets them take turns at short bursts of
runs, so that a noisy spell on a shared machine falls on all of them. The children are this
module (``python -m benchmarks.side_by_side --child JOB RESULT`` or ``--turns JOB``), run in
``child_env``. Also here: what a report says about the run (machine, command, other processes'
CPU use).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

from benchmarks.contenders import Job, Runner, Unavailable, runner
from onnxcam.errors import OnnxcamError, first_line

MB = 1e6
MIN_REPEATS = 3
ROOT = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "benchmarks.side_by_side"]


def timed(function: Callable[[], object]) -> float:
    """Seconds one call of ``function`` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    """Median and fastest run in milliseconds, and how many runs."""
    return {"median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "repeats": len(times)}


def peak_rss_mb() -> float:
    """This process's peak resident set size: VmHWM on Linux (ru_maxrss would carry the
    parent's peak over fork and exec), else ru_maxrss (KiB, bytes on macOS)."""
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) * 1024 / MB
    except (OSError, StopIteration):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * (1 if sys.platform == "darwin" else 1024) / MB


# ---------------------------------------------------------------- children

def _timings(run: Runner, job: Job) -> list[float]:
    """Seconds per run after ``job.warmup`` warm-up runs; slow contenders get fewer repeats
    (at least MIN_REPEATS) so that the timed runs fit roughly in ``job.budget`` seconds."""
    start = time.perf_counter()
    for _ in range(job.warmup):
        run()
    per_run = (time.perf_counter() - start) / max(job.warmup, 1)
    repeats = min(job.repeats, max(MIN_REPEATS, int(job.budget / max(per_run, 1e-9))))
    return [timed(run) for _ in range(repeats)]


def _set_up(job: Job) -> tuple[Optional[Runner], dict]:
    """The contender's runner (None where it cannot run here) and what its setup reports."""
    start = time.perf_counter()
    try:
        run = runner(job)
    except Unavailable as why:
        return None, {"available": False, "reason": str(why)}
    return run, {"available": True, "setup_s": time.perf_counter() - start}


def _child(job_json: str, result_path: str) -> int:
    """Child of ``run_child``: set up and time one contender, write its result to ``result_path``."""
    warnings.simplefilter("ignore")
    job = Job(**json.loads(job_json))
    run, result = _set_up(job)
    if run is not None:
        result.update(summary(_timings(run, job)), peak_rss_mb=peak_rss_mb())
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
            reply([timed(run) for _ in range(int(line))])
        except Exception as error:  # whatever the contender's library raises
            reply({"error": f"{type(error).__name__}: {first_line(error)}"})
            return 1
    reply({"peak_rss_mb": peak_rss_mb()})
    return 0


# ---------------------------------------------------------------- the run and its machine

def child_env(spinning: bool = True) -> dict[str, str]:
    """Environment for children: this onnxcam (and ``benchmarks``) importable even when it is
    not installed and, unless ``spinning`` or the caller set it, OMP_WAIT_POLICY=PASSIVE."""
    path = os.environ.get("PYTHONPATH")
    return {**({} if spinning else {"OMP_WAIT_POLICY": "PASSIVE"}), **os.environ,
            "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


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


def command_line() -> str:
    """The command line that started this run, as a user would type it."""
    script = sys.argv[0]
    program = f"python {os.path.relpath(script)}" if script.endswith(".py") else Path(script).name
    return " ".join([program, *sys.argv[1:]])


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


# ---------------------------------------------------------------- parents

def run_child(job: Job, folder: Path) -> dict:
    """Time one contender at one batch size in a fresh interpreter; ``other_cores`` says how
    busy other processes kept the machine meanwhile."""
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    start = cpu_sample()
    done = subprocess.run([*CHILD, "--child", json.dumps(asdict(job)), str(result_path)],
                          env=child_env(job.spinning), capture_output=True, text=True)
    if done.returncode != 0 or not result_path.is_file():
        return {"available": False, "reason": f"failed: {last_line(done.stderr, done.returncode)}", "error": True}
    return {**json.loads(result_path.read_text()), "other_cores": other_cores(start)}


class _Turn:
    """One ``interleave`` child: a fresh interpreter timing one contender on request."""

    def __init__(self, job: Job, folder: Path):
        self.errors = open(folder / f"turn-{len(list(folder.glob('turn-*')))}.err", "w+")
        self.process = subprocess.Popen([*CHILD, "--turns", json.dumps(asdict(job))],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                        env=child_env(job.spinning), text=True)
        self.times: list[float] = []
        self.turns = 0

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
        return {"available": True, **summary(self.times), "turns": self.turns, "peak_rss_mb": peak}

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


def main(argv: list[str]) -> int:
    """A child: ``--child JOB RESULT`` (``run_child``) or ``--turns JOB`` (``interleave``)."""
    children = {"--child": _child, "--turns": _turns}
    if argv[:1] and argv[0] in children:
        return children[argv[0]](*argv[1:])
    print("side_by_side: the child of run_child (--child JOB RESULT) or interleave (--turns JOB)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
