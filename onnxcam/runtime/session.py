"""Opening an explain-graph with onnxruntime and reading its metadata."""
from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Optional, Sequence

import onnxruntime as ort

from onnxcam.errors import OnnxcamError, first_line
from onnxcam.runtime.artifact import (
    FORMAT_VERSION,
    INPUT,
    LOGITS,
    METADATA_KEY,
    TARGET_INDICES,
    TARGETS,
    ArtifactInfo,
    activation_name,
    gradient_name,
)
from onnxcam.runtime.model_files import model_file, resolve_model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
ALLOW_SPINNING = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def _canonical(name: str, available: Sequence[str]) -> str:
    """Map a short or differently-cased provider name ("cuda") to its full spelling."""
    wanted = name.strip().lower()
    for provider in [*available, *ort.get_all_providers()]:
        if provider.lower() in (wanted, wanted + "executionprovider"):
            return provider
    return name.strip()


def provider_list(text: Optional[str]) -> Optional[list[str]]:
    """A comma-separated provider list (``--providers cuda,cpu``) as a list; None when not given."""
    return [p.strip() for p in text.split(",") if p.strip()] if text else None


def select_providers(requested: Optional[Sequence[str]],
                     available: Optional[Sequence[str]] = None) -> list[str]:
    """Execution providers to use: the requested ones (all must be available) or CUDA-then-CPU."""
    available = list(ort.get_available_providers() if available is None else available)
    if not requested:
        return [CUDA, CPU] if CUDA in available else [CPU]
    chosen = [_canonical(name, available) for name in requested]
    for provider in chosen:
        if provider not in available:
            raise OnnxcamError(f"providers: {provider} is not available in this onnxruntime "
                               f"(available: {', '.join(available) or 'none'})")
    return chosen


class NotExplainGraph(OnnxcamError):
    """A valid ONNX file without onnxcam metadata: a plain model, not an explain-graph."""

    def __init__(self, path: Path):
        super().__init__(f"{path}: not an onnxcam explain-graph (no '{METADATA_KEY}' metadata); "
                         "export one with `onnxcam export`")
        self.path = path


def read_info(path: Path, session: ort.InferenceSession) -> ArtifactInfo:
    """The ArtifactInfo stored in a session's model metadata, validated against the graph."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise NotExplainGraph(path)
    try:
        info = ArtifactInfo.from_json(text)
    except (ValueError, TypeError, KeyError) as error:
        raise OnnxcamError(f"{path}: corrupt '{METADATA_KEY}' metadata ({first_line(error)})") from None
    if info.format_version > FORMAT_VERSION:
        raise OnnxcamError(f"{path}: explain-graph format version {info.format_version} is newer than "
                           f"this onnxcam supports ({FORMAT_VERSION}); upgrade onnxcam")
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    needed = [LOGITS, TARGET_INDICES] + [f(layer) for layer in info.layers
                                          for f in (activation_name, gradient_name)]
    missing = [n for n in (INPUT, TARGETS) if n not in inputs] + [n for n in needed if n not in outputs]
    if missing or not info.layers:
        what = f"lacks {', '.join(repr(m) for m in missing)}" if missing else "names no target layers"
        raise OnnxcamError(f"{path}: broken explain-graph: it {what}")
    return info


def _environment_key(providers: Sequence[str]) -> str:
    """What an optimized graph depends on: onnxruntime's version, the providers and the CPU
    (the NCHWc layout onnxruntime picks depends on its vector width)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "")
    except OSError:
        flags = ""
    text = "|".join([ort.__version__, *providers, platform.machine(), flags])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cached_graph_path(path: Path, providers: Sequence[str]) -> Path:
    """Where ``cache=True`` keeps the optimized graph of ``path``: a hidden file beside it,
    named for the environment it was optimized in."""
    return path.with_name(f".{path.stem}.optimized-{_environment_key(providers)}.onnx")


def session_options(threads: Optional[int] = None, spinning: bool = True) -> ort.SessionOptions:
    """Full graph optimization; ``threads`` intra-op threads; ``spinning=False`` makes waiting
    threads sleep instead of busy-wait (for a server sharing its cores, or several sessions)."""
    if threads is not None and threads < 1:
        raise OnnxcamError(f"threads: must be at least 1, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        for key in ALLOW_SPINNING:
            options.add_session_config_entry(key, "0")
    return options


def create_session(path: Path, options: ort.SessionOptions, providers: list[str], cache: bool) -> ort.InferenceSession:
    """A session of ``path``; with ``cache``, from the optimized graph saved beside it by an
    earlier call in the same environment (saved now if missing or older than ``path``)."""
    if not cache:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    cached = cached_graph_path(path, providers)
    if cached.is_file() and cached.stat().st_mtime >= path.stat().st_mtime:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(str(cached), sess_options=options, providers=providers)
    partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
    options.optimized_model_filepath = str(partial)
    options.log_severity_level = 3  # not the warning that the saved graph is hardware-specific
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        os.replace(partial, cached)
    except Exception:  # an unwritable folder (or a bad model, which the retry reports)
        partial.unlink(missing_ok=True)
        options.optimized_model_filepath = ""
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    return session


def open_session(path: str | os.PathLike, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, spinning: bool = True,
                 cache: bool = False) -> tuple[ort.InferenceSession, ArtifactInfo]:
    """Load an explain-graph (a path, or a bare name exported to ``models/NAME.onnx``); raise
    OnnxcamError for a missing, invalid or non-onnxcam file.

    ``cache=True`` keeps onnxruntime's optimized graph beside the file (see
    ``cached_graph_path``), so later sessions in the same environment skip the optimization:
    they start several times faster and compute the same outputs.
    """
    path = resolve_model(path)
    if not path.is_file():
        hint = "" if path.suffix == ".onnx" else f" (nor {model_file(str(path))}: `onnxcam export {path}` writes it)"
        raise OnnxcamError(f"{path}: no such model file{hint}")
    options = session_options(threads, spinning)
    chosen = select_providers(providers)
    try:
        session = create_session(path, options, chosen, cache)
    except Exception as error:  # onnxruntime raises its own exception types for unloadable files
        raise OnnxcamError(f"{path}: not a valid ONNX model: {first_line(error)}") from None
    return session, read_info(path, session)
