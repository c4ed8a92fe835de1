"""``onnxcam serve``: an HTTP explain service (Starlette + uvicorn, the ``serve`` extra).

``app`` (routes, limits, errors), ``batching`` (micro-batching onto one onnxruntime run),
``models`` (a served model), ``params`` (request parameters), ``answers`` (response bodies),
``metrics`` (Prometheus), ``command`` (the CLI options), ``page/`` (the browser page).
Only ``command`` is imported by ``onnxcam.cli``; it loads the extra when the command runs.
"""
