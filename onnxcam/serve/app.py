"""The ASGI application (Starlette): routes, request limits, errors as JSON, the page."""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Optional

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from onnxcam.errors import OnnxcamError
from onnxcam.images.decode import (
    DEFAULT_MAX_PIXELS,
    ImageTooLarge,
    UnsupportedImage,
    decode_image,
)
from onnxcam.serve.answers import json_answer, png_answer
from onnxcam.serve.metrics import CONTENT_TYPE_LATEST, CountRequests, Metrics
from onnxcam.serve.models import ServedModel
from onnxcam.serve.params import ClientError, parse_options

CONFIG_VARIABLE = "ONNXCAM_SERVE_CONFIG"  # the config as JSON, for worker processes
PATHS = ("/", "/healthz", "/metrics", "/v1/model", "/v1/models", "/v1/explain")
_FORM = "multipart/form-data"


@dataclass
class ServeConfig:
    """What ``onnxcam serve`` was asked to serve, and its limits."""

    models: dict[str, str]  # name -> explain-graph path (or bare name); the first is the default
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_body_mb: float = 20.0
    max_pixels: Optional[int] = DEFAULT_MAX_PIXELS
    threads: Optional[int] = None
    providers: Optional[list[str]] = None
    spinning: bool = False
    png_level: Optional[int] = 0  # overlay PNG compression (onnxcam.render.overlay.encode_png)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        return cls(**json.loads(text))


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it exceeds ``limit`` bytes (declared or received)."""
    too_large = ClientError(413, f"body: larger than this server's limit of {limit / 2**20:g} MB "
                                 "(onnxcam serve --max-body-mb raises it)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_and_params(request: Request, limit: int) -> tuple[bytes, dict[str, list[str]]]:
    """The image's bytes (a form's file field, or the whole body) and every parameter given
    in the query string or as form fields."""
    params: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        params.setdefault(key, []).append(value)
    body = await _read_body(request, limit)
    if not request.headers.get("content-type", "").startswith(_FORM):
        return body, params

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_part_size=limit) as form:
        files = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                files.append(await value.read())
            else:
                params.setdefault(key, []).append(value)
    if len(files) != 1:
        raise ClientError(422, f"image: expected one file in the form, got {len(files)}")
    return files[0], params


def create_app(config: ServeConfig) -> Starlette:
    """The service for ``config``; loads every model now (OnnxcamError if one cannot be)."""
    metrics = Metrics(PATHS)
    max_wait = config.max_wait_ms / 1e3
    models = {name: ServedModel(name, path, max_batch=config.max_batch, max_wait=max_wait,
                                max_pixels=config.max_pixels, threads=config.threads,
                                providers=config.providers, spinning=config.spinning,
                                on_batch=metrics.batch)
              for name, path in config.models.items()}
    default = next(iter(models))
    body_limit = int(config.max_body_mb * 2**20)

    def served(name: Optional[str]) -> ServedModel:
        if name is None:
            return models[default]
        if name not in models:
            raise ClientError(404, f"model: no model named {name!r} (served: {', '.join(models)})")
        return models[name]

    async def explain(request: Request) -> Response:
        start = time.perf_counter()
        data, params = await _image_and_params(request, body_limit)
        names = params.get("model") or [None]
        model = served(names[0])
        options = parse_options(params, model.explainer)
        if not data:
            raise ClientError(400, "image: the request holds no image (an empty body or file)")
        with model.batcher.arriving():
            try:
                image = await run_in_threadpool(decode_image, data, "image", config.max_pixels)
            except ImageTooLarge as error:
                raise ClientError(413, str(error)) from None
            except UnsupportedImage as error:
                raise ClientError(415, str(error)) from None
            except OnnxcamError as error:
                raise ClientError(400, str(error)) from None
            decoded = time.perf_counter()
            future = model.batcher.submit(options.batch_key, (image, options.targets))
        done = await future
        explained = time.perf_counter()
        if options.format == "png":
            png = await run_in_threadpool(png_answer, done, options, model.image_output, config.png_level)
            return Response(png, media_type="image/png")

        def answer() -> JSONResponse:
            times = {"decode": decoded - start, "wait": explained - decoded - done.run_seconds,
                     "run": done.run_seconds}
            body = json_answer(model.name, done, options, model.image_output, times, config.png_level)
            body["time_ms"]["total"] = round((time.perf_counter() - start) * 1e3, 2)
            return JSONResponse(body)
        return await run_in_threadpool(answer)

    async def describe(request: Request) -> Response:
        return JSONResponse(served(request.query_params.get("model")).describe())

    async def listing(request: Request) -> Response:
        return JSONResponse({"default": default, "models": [m.describe() for m in models.values()]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": list(models)})

    async def metrics_text(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def page(request: Request) -> Response:
        return HTMLResponse((resources.files("onnxcam.serve") / "page" / "index.html").read_text("utf-8"))

    async def client_error(request: Request, error: ClientError) -> Response:
        return _error(error.status, error.message)

    async def http_error(request: Request, error: HTTPException) -> Response:
        return _error(error.status_code, f"{request.method} {request.url.path}: {error.detail}")

    async def server_error(request: Request, error: Exception) -> Response:
        return _error(500, f"internal error: {type(error).__name__}: {error}".splitlines()[0])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        for model in models.values():
            await model.batcher.start()
        yield
        for model in models.values():
            await model.batcher.stop()

    app = Starlette(routes=[
        Route("/", page), Route("/healthz", healthz), Route("/metrics", metrics_text),
        Route("/v1/model", describe), Route("/v1/models", listing),
        Route("/v1/explain", explain, methods=["POST"]),
        Mount("/page", StaticFiles(packages=[("onnxcam.serve", "page")]), name="page"),
    ], exception_handlers={ClientError: client_error, HTTPException: http_error, Exception: server_error},
        lifespan=lifespan)
    app.add_middleware(CountRequests, metrics=metrics)
    return app


def app_from_environment() -> Starlette:
    """The app of a worker process (``--workers N``): its config comes in CONFIG_VARIABLE."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_VARIABLE]))
