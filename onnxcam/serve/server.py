"""Running the service under uvicorn: the models it serves, its checks, the workers and the
graceful stop. Nothing here imports the ``serve`` extra (Starlette, uvicorn, ...) until it runs."""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import tempfile

from onnxcam.errors import OnnxcamError
from onnxcam.runtime.model_files import resolve_model
from onnxcam.runtime.session import provider_list


def _models(args: argparse.Namespace) -> dict[str, str]:
    """Model names to files: MODEL under its file's stem, then every --model NAME=MODEL."""
    pairs = [(resolve_model(args.model).stem, args.model)] if args.model else []
    for spec in args.models:
        name, equals, path = spec.partition("=")
        if not (equals and name.strip() and path.strip()):
            raise OnnxcamError(f"--model: expected NAME=MODEL, got {spec!r}")
        pairs.append((name.strip(), path.strip()))
    if not pairs:
        raise OnnxcamError("serve: no model given (MODEL, or --model NAME=MODEL)")
    names = [name for name, _ in pairs]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash:
        raise OnnxcamError(f"--model: the name {clash!r} is given twice")
    return dict(pairs)


def _check(args: argparse.Namespace) -> None:
    for option, value, least in (("--workers", args.workers, 1), ("--max-batch", args.max_batch, 1),
                                 ("--port", args.port, 0), ("--max-wait-ms", args.max_wait_ms, 0),
                                 ("--max-body-mb", args.max_body_mb, 1e-6)):
        if not value >= least:
            raise OnnxcamError(f"{option}: must be at least {least:g}, got {value:g}")
    if args.port > 65535:
        raise OnnxcamError(f"--port: must be at most 65535, got {args.port}")


def _few_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's malloc arenas (unless MALLOC_ARENA_MAX is set): with one arena per busy
    thread, the decoding and encoding threads make the server's memory creep (measured over
    2000 requests: within 5 % with 2 arenas, +23 % with glibc's default). Worker processes
    read the variable."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    os.environ["MALLOC_ARENA_MAX"] = str(count)
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, count)  # M_ARENA_MAX, for this process
    except (OSError, AttributeError):  # not glibc
        pass


def run(args: argparse.Namespace, install_hint: str) -> int:
    """Serve until Ctrl-C or SIGTERM; requests in flight are answered first. Returns 0."""
    _few_malloc_arenas()
    try:
        import prometheus_client  # noqa: F401
        import uvicorn
        from starlette.formparsers import multipart
    except ImportError as error:
        raise OnnxcamError(f"serve needs the {error.name} package: {install_hint}") from None
    if multipart is None:  # Starlette reads forms with python-multipart, imported if present
        raise OnnxcamError(f"serve needs the python-multipart package: {install_hint}")

    from onnxcam.serve.app import CONFIG_VARIABLE, ServeConfig, create_app

    _check(args)
    config = ServeConfig(
        models=_models(args), max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_body_mb=args.max_body_mb, max_pixels=args.max_pixels or None, threads=args.threads,
        providers=provider_list(args.providers),
        spinning=args.spinning, png_level=args.png_level)
    app = create_app(config)  # loads the models: a bad file fails here, in one line
    options = dict(host=args.host, port=args.port, access_log=not args.no_access_log,
                   timeout_graceful_shutdown=None, log_level="info")
    if args.workers > 1:  # each worker process builds its own app from the config
        del app
        os.environ[CONFIG_VARIABLE] = config.to_json()
        target, options = "onnxcam.serve.app:app_from_environment", dict(options, factory=True,
                                                                       workers=args.workers)
    else:
        target = app
    # uvicorn drains the requests in flight on SIGINT/SIGTERM, then raises the signal again;
    # handlers that only note it let the command return 0 after the drain.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="onnxcam-metrics-") as shared:
        if args.workers > 1:  # the workers' metrics, added up by every worker's /metrics
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", shared)
        try:
            uvicorn.run(target, **options)
        except SystemExit as stop:  # uvicorn exits when it cannot bind or start
            if stop.code:
                raise OnnxcamError(f"serve: could not start on {args.host}:{args.port} "
                                   "(see the log line above)") from None
    return 0
