"""Explaining a whole dataset on Ray (``pip install 'onnxcam[ray]'``).

Ray Data streams the images through a fixed pool of actors, each holding one :class:`Explainer`
(its onnxruntime session loaded once per actor), and returns one row per image. The driver
reads the rows with an iterator (:func:`stream_rows`), keeping the first row of each image, and
may append them to a Parquet file (:class:`ParquetSink`): images, maps and rows stream end to
end. Ray Data's actor pools restart an actor that dies (``max_restarts=-1``) and retry its
batches on the replacement (``max_task_retries=-1``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from onnxcam.api.explainer import Explainer, MethodLike
from onnxcam.errors import OnnxcamError, first_line
from onnxcam.images.decode import DEFAULT_MAX_PIXELS
from onnxcam.images.sources import image_stream, output_stems
from onnxcam.methods.base import Method
from onnxcam.progress import Progress
from onnxcam.render.files import write_explained
from onnxcam.runtime.model_files import resolve_model
from onnxcam.runtime.targets import Targets, target_matrix

if TYPE_CHECKING:
    import argparse

    import pyarrow as pa
    import ray.data

RAY_HINT = "pip install 'onnxcam[ray]'"
PARQUET_NAME = "explain.parquet"  # where `onnxcam explain --ray` writes the rows, under OUT
LOCAL_OBJECT_STORE = 1 << 30  # bytes of object store for a local Ray started by onnxcam
ACTOR_CPUS = 0.5  # Ray CPUs an actor reserves: a scheduling share, leaving room for read tasks
MAP_FORMATS = ("png", "raw")


def _ray():
    """The ray module with Ray Data, or a one-line install hint."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise OnnxcamError(f"ray: Ray Data is not installed: {RAY_HINT}") from None
    return ray


def _ensure_ray() -> Any:
    """The ray module, connected: to the session already running in this process, else a new
    local Ray whose object store is capped at LOCAL_OBJECT_STORE."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address="local", object_store_memory=LOCAL_OBJECT_STORE, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    return ray


@contextmanager
def ray_session(address: Optional[str] = None) -> Iterator[Any]:
    """Ray for one job: the session this process already has, else a connection to the cluster
    at ``address`` (``host:port``, ``auto``, ``ray://...``), else a local Ray started here.
    What this opens, it shuts down on exit."""
    ray = _ray()
    if ray.is_initialized():
        yield ray
        return
    if address in (None, "local"):
        _ensure_ray()
    else:
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise OnnxcamError(f"ray: cannot connect to {address} ({first_line(error)})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _schema(maps: str, written: bool) -> "pa.Schema":
    """The rows' Arrow schema; see :func:`explain_dataset`."""
    import pyarrow as pa

    fields = [
        ("position", pa.int64()), ("path", pa.string()), ("error", pa.string()),
        ("classes", pa.list_(pa.int64())), ("labels", pa.list_(pa.string())),
        ("probs", pa.list_(pa.float32())), ("methods", pa.list_(pa.string())),
        ("zero_maps", pa.list_(pa.bool_())), ("boxes", pa.list_(pa.list_(pa.int32()))),
        ("heatmaps", pa.list_(pa.binary())) if maps == "png"
        else ("raw_maps", pa.list_(pa.list_(pa.list_(pa.float32())))),
    ]
    if written:
        fields += [("overlays", pa.list_(pa.string())), ("grid", pa.string()), ("record", pa.string())]
    return pa.schema(fields)


def _offsets(lengths: Sequence[int]) -> np.ndarray:
    """Arrow list offsets of lists with these lengths."""
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)


def _map_column(rows: Sequence[Optional[list[np.ndarray]]]) -> "pa.Array":
    """Per row a list of 2-D float32 maps (None for an error row) as a list<list<list<float>>>
    Arrow column, built from the arrays without going through Python floats."""
    import pyarrow as pa

    maps = [m for row in rows if row is not None for m in row]
    values = pa.array(np.concatenate([m.ravel() for m in maps]) if maps else np.empty(0, np.float32))
    heights = [m.shape[0] for m in maps]
    lines = pa.ListArray.from_arrays(_offsets(np.repeat([m.shape[1] for m in maps], heights)), values)
    grids = pa.ListArray.from_arrays(_offsets(heights), lines)
    missing = pa.array([row is None for row in rows])
    return pa.ListArray.from_arrays(_offsets([len(row or ()) for row in rows]), grids, mask=missing)


def _png(heatmap: np.ndarray) -> bytes:
    """A [0, 1] heatmap as an 8-bit grayscale PNG."""
    ok, encoded = cv2.imencode(".png", np.round(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8))
    if not ok:
        raise OnnxcamError("heatmap: cannot encode PNG")
    return encoded.tobytes()


class ExplainWorker:
    """What each Ray actor runs: one Explainer, loaded when the actor starts, that turns a batch
    of rows (``path``, optional ``position``, ``image``, ``name``, ``targets``) into a table of
    explained rows, one per input row; an image that cannot be used is a row with an error."""

    def __init__(self, model: str, methods: Sequence[Method], *, workdir: str, threads: int,
                 providers: Optional[Sequence[str]], spinning: bool, cache: bool, targets: Targets,
                 top_k: int, maps: str, output_dir: Optional[str], alpha: float, options: dict,
                 max_pixels: Optional[int]):
        if os.path.isdir(workdir):  # relative image and output paths mean what they mean to the driver
            os.chdir(workdir)
        self.explainer = Explainer(model, providers, threads, spinning=spinning, cache=cache,
                                   max_pixels=max_pixels)
        self.methods = [self.explainer.method(m) for m in methods]
        self.targets, self.top_k, self.maps, self.alpha, self.options = targets, top_k, maps, alpha, options
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.schema = _schema(maps, output_dir is not None)

    def __call__(self, batch: dict[str, np.ndarray]) -> "pa.Table":
        import pyarrow as pa

        paths = [str(p) for p in batch["path"]]
        rows: list[dict] = [{"position": None if "position" not in batch else int(batch["position"][j]),
                             "path": path} for j, path in enumerate(paths)]
        images = list(batch["image"]) if "image" in batch else paths
        targets = np.stack(list(batch["targets"])) if "targets" in batch else self.targets
        names = batch["name"] if "name" in batch else [Path(p).stem for p in paths]
        as_image = [method.image_output for method in self.methods]
        for part in self.explainer.explain_iter(images, self.methods, targets, self.top_k,
                                                batch_size=len(paths), **self.options):
            for j, source, error in part.failures:  # arrays are named by batch index: use the path
                rows[j]["error"] = error.replace(source, paths[j], 1)
            for i, j in enumerate(part.positions):
                rows[j].update(self._explained(part.results, i, paths[j], str(names[j]), as_image))
        columns = {name: [row.get(name) for row in rows] for name in self.schema.names}
        if self.maps == "raw":
            columns["raw_maps"] = _map_column(columns["raw_maps"])
        return pa.table(columns, schema=self.schema)

    def _explained(self, results, i: int, path: str, name: str, as_image: Sequence[bool]) -> dict:
        """The columns of image ``i`` of ``results`` (one ExplainResult per method)."""
        first, count = results[0], results[0].classes.shape[1]
        each = [(result, k) for result in results for k in range(count)]
        row = {
            "classes": first.classes[i].tolist(), "labels": [first.label(i, k) for k in range(count)],
            "probs": first.probs[i].tolist(), "methods": [result.method for result in results],
            "zero_maps": [bool(result.zero_maps[i, k]) for result, k in each],
            "boxes": [list(boxes[0]) if (boxes := result.boxes(i, k)) else None for result, k in each],
        }
        if self.maps == "png":
            row["heatmaps"] = [_png(result.heatmaps[i][k]) for result, k in each]
        else:
            row["raw_maps"] = [result.raw_maps[i, k] for result, k in each]
        if self.output_dir is not None:
            record = write_explained(results, i, path, name, self.output_dir, self.alpha, as_image)
            row.update(overlays=record["overlays"], grid=record["grid"], record=json.dumps(record))
        return row


def _pool_shape(ray, actors: Optional[int], threads: Optional[int]) -> tuple[int, int]:
    """(actors, onnxruntime threads per actor): by default one actor for every two cores of the
    cluster, and threads so that the actors Ray spreads onto a node share its cores."""
    cpus = [node["Resources"]["CPU"] for node in ray.nodes()
            if node.get("Alive") and node.get("Resources", {}).get("CPU")]
    if not cpus:
        raise OnnxcamError("ray: the cluster has no CPUs")
    actors = actors if actors is not None else max(1, int(sum(cpus)) // 2)
    if actors < 1:
        raise OnnxcamError(f"actors: must be at least 1, got {actors}")
    if threads is not None and threads < 1:
        raise OnnxcamError(f"threads: must be at least 1, got {threads}")
    per_node = math.ceil(actors / len(cpus))
    return actors, threads if threads is not None else max(1, int(min(cpus)) // per_node)


def explain_dataset(model: Union[str, os.PathLike],
                    images: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], "ray.data.Dataset"],
                    method: Union[MethodLike, Sequence[MethodLike]] = "gradcam", targets: Targets = None,
                    top_k: int = 1, *, batch_size: int = 8, actors: Optional[int] = None,
                    threads: Optional[int] = None, num_cpus: float = ACTOR_CPUS,
                    providers: Optional[Sequence[str]] = None, spinning: bool = False, cache: bool = False,
                    maps: str = "png", output_dir: Union[None, str, os.PathLike] = None, alpha: float = 0.5,
                    samples: Optional[int] = None, noise: Optional[float] = None,
                    forward_batch_size: int = 32,
                    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> "ray.data.Dataset":
    """Explain every image of ``images`` on Ray; returns the lazy Dataset of rows, one per
    image (read it with :func:`stream_rows`, which keeps one row per image however often Ray
    retried its batch).

    ``images``: a folder (its images, recursively), a list of paths, or a ``ray.data.Dataset``
    with a ``path`` column and optionally ``image`` (decoded HxWx3 uint8 RGB, e.g.
    ``ray.data.read_images(..., include_paths=True)``), ``name`` and ``targets``. Paths are
    opened by the actors, relative to the driver's working directory: on a cluster they, the
    model file and ``output_dir`` must be on storage every node sees at the same path.
    ``method``, ``targets``, ``top_k``, ``samples``, ``noise``, ``forward_batch_size``: as
    for :meth:`Explainer.explain_iter` (an [N, K] ``targets`` array needs a list of paths).
    ``actors``: the pool's size (default one per two cluster cores); ``threads``:
    onnxruntime threads per actor (default: a node's cores shared by its actors);
    ``num_cpus``: the Ray CPUs each actor reserves; ``providers``, ``spinning``, ``cache``,
    ``max_pixels``: as for :class:`Explainer`.

    Row columns: ``position`` (index in a folder or list; null for a Dataset), ``path``,
    ``error`` (null, or why the image could not be used: the other columns are then null),
    ``classes``, ``labels``, ``probs`` (K each), ``methods``, and per method and class
    (method-major, M*K entries) ``zero_maps``, ``boxes`` ([x0, y0, x1, y1] of the largest
    salient segment, null for a flagged map) and with ``maps="png"`` ``heatmaps`` (8-bit
    grayscale PNG at the image's resolution) or with ``maps="raw"`` ``raw_maps`` (float32
    maps, unnormalized, at the layer's resolution). With ``output_dir`` each actor also
    writes what ``onnxcam explain`` writes (overlays and grid, named by the ``name`` column,
    the unique output stems of a folder or list, or the file stem) and the row holds
    ``overlays``, ``grid`` and ``record`` (the JSON line ``onnxcam explain`` prints).
    """
    ray = _ray()
    if maps not in MAP_FORMATS:
        raise OnnxcamError(f"maps: expected one of {', '.join(MAP_FORMATS)}, got {maps!r}")
    path = resolve_model(model).resolve()
    probe = Explainer(path, ["CPUExecutionProvider"], threads=1)  # checks the file, methods and targets
    methods = [method] if isinstance(method, (str, Method)) else list(method)
    chosen = probe.prepare_methods(methods, batch_size, forward_batch_size, samples, noise)
    per_image = targets is not None and np.ndim(targets) == 2
    if not per_image:
        target_matrix(targets, top_k, 1, probe.num_classes)
    actors, threads = _pool_shape(_ensure_ray(), actors, threads)
    if isinstance(images, ray.data.Dataset):
        if per_image:
            raise OnnxcamError("targets: for a Dataset, give per-image targets as its 'targets' column")
        dataset = images
    else:
        files = list(image_stream(images))
        if any(isinstance(image, np.ndarray) for image in files):
            raise OnnxcamError("images: give decoded images as a ray.data.Dataset with an 'image' column")
        if not files:
            raise OnnxcamError("images: nothing to explain")
        rows = [{"position": i, "path": str(p)} for i, p in enumerate(files)]
        if output_dir is not None:
            for row, name in zip(rows, output_stems([Path(p) for p in files])):
                row["name"] = name
        if per_image:
            for row, line in zip(rows, target_matrix(targets, top_k, len(rows), probe.num_classes)):
                row["targets"] = line.tolist()
        dataset = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / batch_size))
    worker_options = dict(
        workdir=os.getcwd(), threads=threads, providers=providers, spinning=spinning, cache=cache,
        targets=None if per_image else targets, top_k=top_k, maps=maps,
        output_dir=None if output_dir is None else str(output_dir), alpha=alpha, max_pixels=max_pixels,
        options=dict(samples=samples, noise=noise, forward_batch_size=forward_batch_size))
    return dataset.map_batches(ExplainWorker, batch_size=batch_size, batch_format="numpy",
                               compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=num_cpus,
                               fn_constructor_args=(str(path), chosen), fn_constructor_kwargs=worker_options)


class _Seen:
    """Images already kept: one bit per position, and the paths of rows without one."""

    def __init__(self):
        self.bits, self.paths, self.count = bytearray(), set(), 0

    def first(self, position: Optional[int], path: str) -> bool:
        """True the first time an image is met."""
        if position is None:
            if path in self.paths:
                return False
            self.paths.add(path)
        else:
            byte, bit = divmod(position, 8)
            if byte >= len(self.bits):
                self.bits.extend(bytes(max(byte + 1 - len(self.bits), len(self.bits))))
            if self.bits[byte] >> bit & 1:
                return False
            self.bits[byte] |= 1 << bit
        self.count += 1
        return True


def stream_rows(dataset: "ray.data.Dataset", expected: Optional[int] = None) -> Iterator["pa.Table"]:
    """The rows of :func:`explain_dataset` as Arrow tables, a block at a time as they complete,
    each image once: a row whose image (its ``position``, else its ``path``) was already yielded
    is dropped, so a batch Ray ran twice is never counted twice. With ``expected`` (the number
    of images), an OnnxcamError at the end if any never came back."""
    import pyarrow as pa

    seen = _Seen()
    for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        positions = table["position"].to_pylist() if "position" in table.column_names else [None] * len(table)
        keep = [seen.first(position, path) for position, path in zip(positions, table["path"].to_pylist())]
        if all(keep):
            yield table
        elif any(keep):
            yield table.filter(pa.array(keep))
    if expected is not None and seen.count != expected:
        raise OnnxcamError(f"ray: {expected - seen.count} of {expected} images never came back from the workers")


class ParquetSink:
    """Arrow tables appended to one Parquet file, in row groups of at most ``group_rows`` rows
    or about ``group_bytes`` bytes (so memory holds one group, however many rows)."""

    def __init__(self, path: Union[str, os.PathLike], group_rows: int = 4096, group_bytes: int = 8 << 20):
        self.path, self.group_rows, self.group_bytes = Path(path), group_rows, group_bytes
        self.writer, self.pending, self.pending_rows, self.pending_bytes = None, [], 0, 0

    def add(self, table: "pa.Table") -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        if self.pending_rows >= self.group_rows or self.pending_bytes >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            return
        group = pa.concat_tables(self.pending)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, group.schema)
        self.writer.write_table(group, row_group_size=group.num_rows)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "ParquetSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_RAISED = re.compile(r"^([\w.]+(?:Error|Exception)): (.+)$", re.MULTILINE)


def _task_error(error: Exception) -> OnnxcamError:
    """A failed Ray job as one line: what the worker raised. Ray Data hands a worker's exception
    back only as the text of its traceback (the original object is dropped on the way), whose
    first ``Type: message`` line is the one the worker raised."""
    raised = _RAISED.search(str(error))
    if raised is None:
        return OnnxcamError(f"ray: {type(error).__name__}: {first_line(error)}")
    kind, message = raised.groups()
    return OnnxcamError(message if kind == f"{OnnxcamError.__module__}.{OnnxcamError.__name__}"
                        else f"ray: {kind}: {message}")


def run_command(args: "argparse.Namespace", methods: Sequence[Method], paths: list[Path],
                errors: list[str], providers: Optional[Sequence[str]]) -> int:
    """``onnxcam explain ... --ray [ADDRESS]``: what the local command writes and prints, with
    the rows in ``OUT/explain.parquet``; the exit status as for the local command."""
    ok = not errors
    with Progress(len(paths)) as progress:
        for line in errors:
            progress.message(f"onnxcam: {line}")
        if not paths:
            return 1
        with ray_session(args.ray) as ray:
            ray.data.DataContext.get_current().enable_progress_bars = False
            for handler in logging.getLogger("ray.data").handlers:  # errors come as one line below
                if handler.name == "console":
                    handler.setLevel(logging.CRITICAL)
            out = Path(args.output_dir)
            dataset = explain_dataset(
                args.model, paths, methods, args.target, args.top_k, batch_size=args.batch_size,
                actors=args.actors, threads=args.threads, providers=providers, spinning=args.spinning,
                cache=args.cache, maps="raw", output_dir=out, alpha=args.alpha, samples=args.samples,
                noise=args.noise, forward_batch_size=args.forward_batch_size,
                max_pixels=args.max_pixels or None)
            try:
                with ParquetSink(out / PARQUET_NAME) as sink:
                    for table in stream_rows(dataset, expected=len(paths)):
                        for record, error in zip(table["record"].to_pylist(), table["error"].to_pylist()):
                            if error is None:
                                print(record, flush=True)
                            else:
                                progress.message(f"onnxcam: {error}")
                                ok = False
                        sink.add(table.drop_columns(["record"]))
                        progress.update(table.num_rows)
            except OnnxcamError:
                raise
            except Exception as error:  # a job Ray could not finish, as one line
                raise _task_error(error) from None
    return 0 if ok else 1
