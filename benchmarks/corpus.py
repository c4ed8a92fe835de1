"""Classifier files made the way users make them, run through onnxcam export and explain.

Per file of the corpus (``corpus_models``): whether ``onnxcam export FILE`` explains it with
gradients or which one line refuses it, its logits and gradients against the original file under
onnxruntime, and Grad-CAM's time against plain inference of the original file.

    python benchmarks/corpus.py                          # build, run, table
    python benchmarks/corpus.py build [--only SUBSTR]    # the files, into benchmarks/.corpus/files/
    python benchmarks/corpus.py run [--only SUBSTR] [--limit N] [--rerun refused|all]
    python benchmarks/corpus.py table                    # docs/results/corpus.md from the JSON

``build`` skips files already built (about 11 GB for the whole corpus, under benchmarks/.corpus/,
git-ignored; where this environment's optimum has no ONNX exporter, ``corpus_models.OPTIMUM_PINS``
are installed from PyPI into benchmarks/.corpus/optimum-env first) and ``run`` files already run
(their results go to benchmarks/results/corpus.json after each file, so a killed run resumes;
``--rerun refused`` after a change to the reader). Per file, ``run``
starts ``onnxcam export`` (with a timeout), ``onnxcam explain`` on a photo, a child that compares
the explain-graph with the original file (``check``), and the timing: plain onnxruntime inference
of the original file against ``Explainer.explain`` with Grad-CAM, each in its own process taking
turns (``side_by_side.interleave``), at batch 1 and, where the file's batch is dynamic, 8.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.contenders import CPU, GRADCAM, PLAIN, Job  # noqa: E402
from benchmarks.corpus_models import Spec, corpus  # noqa: E402
from benchmarks.families import TIME_TARGETS, combine_rounds  # noqa: E402
from benchmarks.side_by_side import ROOT, child_env, command_line, interleave, last_line, machine_info  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".corpus"
FILES, GRAPHS, INPUTS = CACHE / "files", CACHE / "graphs", CACHE / "inputs"
RESULTS = Path(__file__).resolve().parent / "results" / "corpus.json"
PAGE = ROOT / "docs" / "results" / "corpus.md"
PHOTO = CACHE / "chelsea.png"
MIN_PLAIN_MS = 5.0  # the time goal holds for files whose plain inference takes at least this at batch 1
BATCHES = [1, 8]  # timed batch sizes (8: files with a dynamic batch only)


@dataclass
class Config:
    """How ``run`` runs each file."""

    export_timeout: int = 300
    timeout: int = 300  # explain and check
    rounds: int = 1
    repeats: int = 50
    budget: float = 3.0
    threads: int = 2


# ---------------------------------------------------------------- the report

def load_report() -> dict:
    report = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    return {"built": {}, "results": {}, **report}


def save_report(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def selected(specs: list[Spec], only: Optional[str]) -> list[Spec]:
    return [spec for spec in specs if only is None or only in spec.name]


def specs() -> list[Spec]:
    return corpus(FILES, CACHE / "optimum-env")


# ---------------------------------------------------------------- build

def file_facts(path: Path) -> dict:
    """What the file is: opset, op types, size, input and outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    image = next(i for i in graph.input if i.name not in initializers)
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in image.type.tensor_type.shape.dim]
    ops = sorted({node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                  for node in graph.node})
    return {"opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
            "ops": ops, "size_mb": round(path.stat().st_size / 1e6, 2), "input": dims,
            "input_type": onnx.TensorProto.DataType.Name(image.type.tensor_type.elem_type).lower(),
            "dynamic_batch": not isinstance(dims[0], int) if dims else False,
            "outputs": [o.name for o in graph.output]}


def build_one(spec: Spec) -> dict:
    """Write ``spec``'s file (under another name first, so a killed build leaves none) and its facts."""
    path = FILES / f"{spec.name}.onnx"
    partial_path = FILES / f"{spec.name}.partial.onnx"
    started = time.perf_counter()
    try:
        spec.make(partial_path)
    except Exception as error:  # whatever the exporter or converter raises
        partial_path.unlink(missing_ok=True)
        lines = str(error).strip().splitlines()
        return {"category": spec.category, "build_error": f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]}
    partial_path.rename(path)
    return {"category": spec.category, "weights": spec.weights, "build_s": round(time.perf_counter() - started, 1),
            **file_facts(path)}


def build(chosen: list[Spec]) -> None:
    """Build every file of ``chosen`` not built yet (failures are tried again)."""
    FILES.mkdir(parents=True, exist_ok=True)
    for spec in chosen:
        report = load_report()
        if (FILES / f"{spec.name}.onnx").is_file() and "build_error" not in report["built"].get(spec.name, {}):
            continue
        entry = build_one(spec)
        shown = entry.get("build_error") or f"{entry['size_mb']} MB, {entry['build_s']} s"
        print(f"build {spec.name}: {shown}", file=sys.stderr, flush=True)
        report = load_report()  # a run may have written meanwhile
        report["built"][spec.name] = entry
        save_report(report)


# ---------------------------------------------------------------- run

def _command(command: list[str], timeout: int) -> tuple[bool, str, float]:
    """Run ``command``: whether it succeeded, its one-line error (or stdout's last line), seconds."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, env=child_env(False), capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.perf_counter() - started
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("onnxcam: error:")]
        return False, errors[-1] if errors else last_line(done.stderr, done.returncode), seconds
    return True, last_line(done.stdout, 0), seconds


def photo() -> Path:
    """scikit-image's cat, the photo every file explains."""
    if not PHOTO.is_file():
        import cv2
        import skimage.data

        PHOTO.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(PHOTO), cv2.cvtColor(skimage.data.chelsea(), cv2.COLOR_RGB2BGR))
    return PHOTO


def option(args: tuple[str, ...], name: str, count: int = 1) -> Optional[list[str]]:
    """The values of ``name`` among ``onnxcam export`` options ``args``, None where absent."""
    if name not in args:
        return None
    at = args.index(name)
    return list(args[at + 1:at + 1 + count])


def measure(spec: Spec, batch: int) -> dict:
    """Child of ``run``: the explain-graph against the original file under onnxruntime (logits'
    relative L2; the target layer's gradient against central finite differences of the file, as
    |difference - g.v| / |g| along three random unit directions and along g, at the best of the
    export check's steps); and it saves the inputs the timing feeds (``batch`` rows)."""
    import onnxruntime as ort
    import torch

    from onnxcam.errors import first_line
    from onnxcam.runtime import artifact
    from onnxcam.runtime.session import read_info
    from onnxcam_export.layer_layouts import from_spatial, to_spatial
    from onnxcam_export.onnx_file import _relative, file_input, read_source, shifted_model

    path, graph_path = FILES / f"{spec.name}.onnx", GRAPHS / f"{spec.name}.onnx"
    size = option(spec.args, "--input-size", 2)
    source = read_source(path, (option(spec.args, "--output-name") or [None])[0],
                         (option(spec.args, "--layout") or [None])[0], [int(s) for s in size] if size else None)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    graph = ort.InferenceSession(str(graph_path), options, providers=CPU)
    info = read_info(graph_path, graph)
    layer = info.layers[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, *info.input_size)).astype(np.float32) * (50.0 if info.scale == 255 else 1.0)
    file_x = file_input(x, source.image, (option(spec.args, "--channels") or ["rgb"])[0].upper())
    graph_x, file_x = save_inputs(spec.name, x, graph, file_x, source)
    logits, targets, gradient = graph.run([artifact.LOGITS, artifact.TARGET_INDICES, artifact.gradient_name(layer)],
                                          graph_feeds(graph, graph_x[:1]))
    try:
        original = ort.InferenceSession(shifted_model(source.model, [layer], [source.logits, layer])
                                        .SerializeToString(), options, providers=CPU)
    except Exception as error:  # onnxruntime's: a float16 file's tensor cannot take a float32 shift
        return {"layer": layer, "precision": info.precision, "check_error": f"no shifted file: {first_line(error)}"}
    rows = source.image.batch or 1
    feed = {source.image.name: np.repeat(file_x[:1], rows, axis=0)}
    zero = np.zeros(original.run([layer], {**feed, "onnxcam_shift/0": np.zeros(1, np.float32)})[0].shape, np.float32)
    target = int(targets[0, 0])

    def file_logits(shift: np.ndarray) -> np.ndarray:
        """The file's first row of logits with the layer shifted, as the graph serves them."""
        out = original.run([source.logits], {**feed, "onnxcam_shift/0": shift})[0]
        row = out.reshape(rows, -1)[0].astype(np.float64)
        return np.concatenate([row, -row]) if info.head == "binary" else row

    layout = info.layouts.get(layer, "nchw")  # the graph's gradient is of the layer made spatial
    like = torch.zeros(zero[:1].shape)  # a shift of the map, none of prefix tokens

    def score(shift: np.ndarray) -> float:
        moved = zero.copy()
        moved[:1] = from_spatial(torch.from_numpy(shift), like, layout).numpy()
        row = file_logits(moved)
        if info.score == "softmax":
            row = np.exp(row - row.max())
            row /= row.sum()
        return float(row[target])

    activation = original.run([layer], {**feed, "onnxcam_shift/0": zero})[0][:1]
    spatial = to_spatial(torch.from_numpy(activation), layout).numpy()
    return {"layer": layer, "layer_shape": list(activation.shape[1:]), "layout": layout, "precision": info.precision,
            "logits_error": _relative(logits, file_logits(zero)[None]),
            **gradient_errors(gradient[0, 0].astype(np.float64), spatial, score, rng)}


def save_inputs(name: str, x: np.ndarray, graph, file_x: np.ndarray, source) -> tuple[np.ndarray, np.ndarray]:
    """The batch as the explain-graph and as the original file take it (their input types), saved
    for the timing."""
    import onnx

    image = next(i for i in source.model.graph.input if i.name == source.image.name)
    graph_x = x.astype(np.float16 if graph.get_inputs()[0].type == "tensor(float16)" else np.float32)
    file_x = file_x.astype(onnx.helper.tensor_dtype_to_np_dtype(image.type.tensor_type.elem_type))
    INPUTS.mkdir(parents=True, exist_ok=True)
    np.save(INPUTS / f"{name}.graph.npy", graph_x)
    np.save(INPUTS / f"{name}.plain.npy", file_x)
    return graph_x, file_x


def graph_feeds(graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """The explain-graph's feeds for ``x``: the top class as the target, an empty ``layer_input``."""
    from onnxcam.runtime import artifact

    feeds = {artifact.INPUT: x, artifact.TARGETS: np.full((len(x), 1), -1, np.int64)}
    feeds.update({i.name: np.zeros([0, *i.shape[1:]], x.dtype) for i in graph.get_inputs()
                  if i.name == artifact.LAYER_INPUT})
    return feeds


def gradient_errors(gradient: np.ndarray, value: np.ndarray, score, rng) -> dict:
    """The export check's comparison (``onnx_file._check_directions``), measured instead of bounded:
    the largest error along the random directions and the error along the gradient itself."""
    from onnxcam_export.onnx_file import FD_STEPS, _finite_difference, _unit

    norm = float(np.linalg.norm(gradient))
    if norm == 0.0:
        return {"gradient_error": None, "scale_error": None, "gradient_norm": 0.0}
    size = max(float(np.linalg.norm(value.astype(np.float64))), 1e-6)
    shape = (1,) + gradient.shape
    errors = []
    for v in [gradient / norm] + [_unit(rng.standard_normal(gradient.shape)) for _ in range(3)]:
        expected = float(np.sum(gradient * v))
        errors.append(min(abs(_finite_difference(score, v, step * size, shape) - expected) / norm
                          for step in FD_STEPS))
    return {"gradient_error": max(errors[1:]), "scale_error": errors[0], "gradient_norm": norm}


def _check(spec: Spec, batch: int, config: Config) -> dict:
    """``measure`` in a child process (``corpus.py check NAME BATCH``)."""
    out = CACHE / "check.json"
    out.unlink(missing_ok=True)
    ok, line, _ = _command([sys.executable, __file__, "check", spec.name, str(batch), str(out)], config.timeout)
    return json.loads(out.read_text()) if ok and out.is_file() else {"check_error": line}


def time_file(spec: Spec, batches: list[int], config: Config) -> dict:
    """Per batch: plain inference of the original file and Grad-CAM end to end on the explain-graph,
    the median of ``config.rounds`` rounds of interleaved processes, and their ratio."""
    files = {PLAIN: {"plain": str(FILES / f"{spec.name}.onnx"), "input": str(INPUTS / f"{spec.name}.plain.npy")},
             GRADCAM: {"explain": str(GRAPHS / f"{spec.name}.onnx"), "input": str(INPUTS / f"{spec.name}.graph.npy")}}
    timings = {}
    with tempfile.TemporaryDirectory(prefix="onnxcam-corpus-") as folder:
        for batch in batches:
            runs: dict[str, list[dict]] = {label: [] for label in files}
            for _ in range(config.rounds):
                jobs = {label: Job(contender=label, batch=batch, threads=config.threads, repeats=config.repeats,
                                   warmup=3, budget=config.budget, model=spec.name, layer="", spinning=False,
                                   files=label_files) for label, label_files in files.items()}
                for label, result in interleave(jobs, Path(folder)).items():
                    runs[label].append(result)
            plain, cam = (combine_rounds(runs[label]) for label in (PLAIN, GRADCAM))
            entry = {"plain_ms": plain.get("median_ms"), "gradcam_ms": cam.get("median_ms")}
            if plain["available"] and cam["available"]:
                entry["ratio"] = cam["median_ms"] / plain["median_ms"]
            else:
                entry["error"] = plain.get("reason") or cam.get("reason")
            timings[str(batch)] = entry
    return timings


def time_goal(timings: dict) -> Optional[bool]:
    """Grad-CAM within TIME_TARGETS of plain inference at each batch timed; None where plain
    inference at batch 1 takes under MIN_PLAIN_MS (or nothing was timed)."""
    one = timings.get("1", {})
    if one.get("plain_ms") is None or one["plain_ms"] < MIN_PLAIN_MS:
        return None
    return all(t.get("ratio") is not None and t["ratio"] <= TIME_TARGETS[int(b)] for b, t in timings.items())


def commit() -> str:
    """The checkout the run used: its commit, '+' where the work tree differs from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "export", "onnxcam"], cwd=ROOT).returncode
    return head.stdout.strip() + ("+" if dirty else "")


def run_one(spec: Spec, built: dict, config: Config) -> dict:
    """Export, explain, check and time one file."""
    GRAPHS.mkdir(parents=True, exist_ok=True)
    graph = GRAPHS / f"{spec.name}.onnx"
    graph.unlink(missing_ok=True)
    export = ["onnxcam", "export", str(FILES / f"{spec.name}.onnx"), "-o", str(graph), *spec.args]
    ok, line, seconds = _command(export, config.export_timeout)
    result = {"explains": ok, "export_s": round(seconds, 1), "commit": commit(),
              "date": time.strftime("%Y-%m-%d")}
    if not ok:
        return {**result, "error": line}
    result["export"] = {key: value for key, value in json.loads(line).items() if key != "model"}
    explained = CACHE / "explained" / spec.name
    ok, line, seconds = _command(["onnxcam", "explain", str(graph), str(photo()), "-o", str(explained)],
                                 config.timeout)
    result.update(explain_s=round(seconds, 1), **({} if ok else {"explain_error": line}))
    batches = BATCHES if built["dynamic_batch"] else BATCHES[:1]
    result.update(_check(spec, max(batches), config))
    if "check_error" not in result and ok:
        result["timings"] = time_file(spec, batches, config)
        result["time_goal"] = time_goal(result["timings"])
    return result


def run(chosen: list[Spec], config: Config, rerun: str, limit: Optional[int]) -> None:
    """Run every built file of ``chosen`` that has no result yet (``rerun``: also those refused, or
    all), at most ``limit`` of them."""
    count = 0
    for spec in chosen:
        if limit is not None and count >= limit:
            return
        report = load_report()
        built, done = report["built"].get(spec.name), report["results"].get(spec.name)
        if built is None or "build_error" in built:
            continue
        if done is not None and not (rerun == "all" or (rerun == "refused" and not done["explains"])):
            continue
        count += 1
        print(f"run {spec.name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = run_one(spec, built, config)
        result["wall_s"] = round(time.perf_counter() - started, 1)
        print(f"  {result.get('error') or 'explains'} ({result['wall_s']} s)", file=sys.stderr, flush=True)
        report = load_report()
        report["results"][spec.name] = result
        report.update(machine=machine_info(), config=vars(config))
        save_report(report)


# ---------------------------------------------------------------- table

def reason(error: str) -> str:
    """A refusal's kind: the op the reader lacks (or the form of it refused), the check that
    failed, or the message itself (files' paths left out)."""
    found = re.search(r"ONNX op (\S+) \(node '[^']*'\): (.*)", error)
    if found:
        op, why = found.groups()
        return f"op {op} (not supported)" if why.startswith("is not supported by") else f"op {op}: {why[:70]}"
    for pattern, kind in ((r"^(timed out)", "{}"), (r"export check failed: (\w+) of", "check: {}"),
                          (r"export check failed: the explain-graph's (\w+)", "check: {}")):
        found = re.search(pattern, error)
        if found:
            return kind.format(found.group(1))
    return re.sub(r"^onnxcam: error: ", "", re.sub(r"\S*/\S+", "FILE", error))[:80]


def outcome(result: dict) -> str:
    """"explains", "refused" (the export's one-line error) or "failed" (a timeout, a crash)."""
    if result["explains"]:
        return "explains"
    return "refused" if result["error"].startswith("onnxcam: error:") else "failed"


def _number(value: Optional[float], digits: str = ".1e") -> str:
    return "—" if value is None else format(value, digits)


def _timing(timings: dict, batch: str) -> str:
    t = timings.get(batch)
    if not t or t.get("ratio") is None:
        return "—"
    mark = "" if timings["1"]["plain_ms"] < MIN_PLAIN_MS else " ✓" if t["ratio"] <= TIME_TARGETS[int(batch)] else " ✗"
    return f"{t['gradcam_ms']:.1f} / {t['plain_ms']:.1f} = {t['ratio']:.2f}{mark}"


def _row(name: str, built: dict, result: Optional[dict]) -> str:
    cells = [f"`{name}`", built["category"], str(built["opset"]), f"{built['size_mb']:.1f}"]
    if result is None:
        cells += ["not run"] + ["—"] * 5
    elif not result["explains"]:
        cells += [f"{outcome(result)}: `{result['error'].replace('|', '/')}`"] + ["—"] * 5
    else:
        timings = result.get("timings", {})
        status = "yes" + (f" (explain: `{result['explain_error']}`)" if "explain_error" in result else "")
        status += f" (check: `{result['check_error']}`)" if "check_error" in result else ""
        cells += [status, _number(result.get("logits_error")),
                  f"{_number(result.get('gradient_error'))} / {_number(result.get('scale_error'))}",
                  _number(timings.get("1", {}).get("plain_ms"), ".1f"), _timing(timings, "1"), _timing(timings, "8")]
    return "| " + " | ".join(cells + [", ".join(built["ops"])]) + " |"


def counts(report: dict) -> list[str]:
    """Files built by category, explained and refused by reason, the time goal."""
    built = {n: b for n, b in report["built"].items() if "build_error" not in b}
    results = {n: r for n, r in report["results"].items() if n in built}
    total = Counter(outcome(r) for r in results.values())
    lines = [f"**{len(built)} files built** ({len(report['built']) - len(built)} could not be built), "
             f"**{len(results)} run**: {total['explains']} explain with gradients, {total['refused']} refused, "
             f"{total['failed']} failed (timeout or crash); {len(built) - len(results)} not run yet"
             + (f" (`python benchmarks/corpus.py run` runs them; here a file took "
                f"{statistics.median(r['wall_s'] for r in results.values()):.0f} s in the median, "
                f"{max(r['wall_s'] for r in results.values()):.0f} s at most)" if results else "") + ".", "",
             "| category | built | run | explain | refused | failed |", "|---|---|---|---|---|---|"]
    for category, count in Counter(sorted(b["category"] for b in built.values())).items():
        mine = Counter(outcome(r) for n, r in results.items() if built[n]["category"] == category)
        lines.append(f"| {category} | {count} | {mine.total()} | {mine['explains']} | {mine['refused']} | "
                     f"{mine['failed']} |")
    refusals = Counter(reason(r["error"]) for r in results.values() if not r["explains"])
    lines += ["", "Refused or failed, by reason:", ""]
    lines += [f"- {count} × {kind}" for kind, count in refusals.most_common()]
    goals = [r["time_goal"] for r in results.values() if r.get("time_goal") is not None]
    ratios = {b: [r["timings"][b]["ratio"] for r in results.values()
                  if r.get("timings", {}).get(b, {}).get("ratio") is not None] for b in ("1", "8")}
    lines += ["", f"Time goal (Grad-CAM ≤ {TIME_TARGETS[1]}× plain inference of the original file at batch 1, "
              f"≤ {TIME_TARGETS[8]}× at batch 8 where the batch is dynamic; files whose plain inference takes "
              f"≥ {MIN_PLAIN_MS:g} ms): met by {sum(goals)} of {len(goals)}; median ratio "
              + ", ".join(f"batch {b} {statistics.median(v):.2f} ({len(v)} files)" for b, v in ratios.items() if v)
              + "."]
    return lines


def op_coverage(report: dict) -> list[str]:
    """Per op type: the files that use it, and how many of those were run and explain."""
    built = {n: b for n, b in report["built"].items() if "build_error" not in b}
    results = report["results"]
    usage: dict[str, list[str]] = {}
    for name, entry in built.items():
        for op in entry["ops"]:
            usage.setdefault(op, []).append(name)
    lines = ["| op | files | run | explain | refusals naming it |", "|---|---|---|---|---|"]
    for op, names in sorted(usage.items(), key=lambda item: -len(item[1])):
        run_ = [results[n] for n in names if n in results]
        named = sum(not r["explains"] and f"ONNX op {op} " in r["error"] for r in run_)
        lines.append(f"| {op} | {len(names)} | {len(run_)} | {sum(r['explains'] for r in run_)} | {named or ''} |")
    return lines


def table(report: dict) -> str:
    """The docs page."""
    machine = report.get("machine", {})
    header = ("| file | category | opset | MB | explains with gradients | logits rel. error | gradient error "
              "(random / along g) | plain ms (batch 1) | Grad-CAM / plain ms, batch 1 | batch 8 | ops |")
    lines = ["# The classifier corpus", "",
             "Classifier files made the way users make them, each run through `onnxcam export FILE` and "
             "`onnxcam explain`. Regenerate with `python benchmarks/corpus.py` (build, run, table; each step "
             "alone: `build`, `run [--only SUBSTR] [--limit N] [--rerun refused|all]`, `table`); the figures are "
             "those of `benchmarks/results/corpus.json`. Besides the test extras, `build` needs "
             "`pip install transformers onnxsim onnxslim onnxconverter-common` (and installs optimum's exporter "
             "itself, see the module's docstring); nothing is downloaded but packages.", "",
             "- files: `benchmarks/corpus_models.py` (random weights, seed 0, except the onnx package's "
             "constant-filled test models and Open-NSFW's trained ones); the smallest model of each family at its "
             "usual input size; torchvision's through `torch.onnx.export` (legacy, `dynamo=False`, at opsets 13 "
             "and 17; dynamo at 18), timm's through `timm.utils.onnx.onnx_export`, Hugging Face's from a config "
             "saved with random weights through optimum's `main_export`",
             "- logits: relative L2 of the explain-graph's logits against the original file's under onnxruntime "
             "(the export accepts ≤ 1e-4); gradient: the target layer's gradient against central finite "
             "differences of the original file, |difference − g·v| / |g| along three random unit directions "
             "(the largest; the export accepts ≤ 1e-3) and along g itself (≤ 1e-2), at the best of the export "
             "check's three steps. With random weights the maps themselves are not compared",
             "- time: `Explainer.explain` with Grad-CAM (maps at input size from the normalized batch) against "
             "plain onnxruntime inference of the original file, CPU provider, the same session options, "
             f"{report.get('config', {}).get('threads', 2)} threads; each in its own process, taking turns; "
             "medians after warm-up. ✓/✗: the goal, for files whose plain inference takes ≥ 5 ms",
             f"- run on {', '.join(sorted({r['date'] for r in report['results'].values()}))}, exporter at commit "
             f"{', '.join(sorted({r['commit'] for r in report['results'].values()}))} ('+': with uncommitted "
             f"changes); machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, shared with other "
             "work (one round per file: read the times as indications)", "",
             "## Counts", "", *counts(report), "", "## Files", "", header, "|" + "---|" * 11]
    built = dict(sorted(report["built"].items(), key=lambda item: (item[1]["category"], item[0])))
    lines += [_row(name, entry, report["results"].get(name)) for name, entry in built.items()
              if "build_error" not in entry]
    failed = [f"- `{name}` ({entry['category']}): {entry['build_error']}" for name, entry in built.items()
              if "build_error" in entry]
    lines += ["", "## Op coverage", "", *op_coverage(report)]
    if failed:
        lines += ["", "## Files that could not be built", "", *failed]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- entry point

def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:  # the child of _check: NAME BATCH OUT
        spec = next(s for s in specs() if s.name == argv[1])
        Path(argv[3]).write_text(json.dumps(measure(spec, int(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=("build", "run", "table"), help="default: all three")
    parser.add_argument("--only", metavar="SUBSTR", help="files whose name contains SUBSTR")
    parser.add_argument("--limit", type=int, metavar="N", help="run: at most N files")
    parser.add_argument("--rerun", choices=("none", "refused", "all"), default="none",
                        help="run: also files run before (those refused, or all)")
    for field, default in vars(Config()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    args = parser.parse_args(argv)
    config = Config(**{field: getattr(args, field) for field in vars(Config())})
    if args.step in (None, "build"):
        build(selected(specs(), args.only))
    if args.step in (None, "run"):
        run(selected(specs(), args.only), config, args.rerun, args.limit)
        report = load_report()
        report["command"] = command_line()
        save_report(report)
    if args.step in (None, "table"):
        PAGE.write_text(table(load_report()))
        print(f"wrote {PAGE.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
