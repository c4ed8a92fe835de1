"""``onnxcam serve``: an HTTP explain service (Starlette + uvicorn, the ``serve`` extra).

``app`` (routes, limits, errors), ``batching`` (micro-batching onto one onnxruntime run),
``models`` (a served model), ``params`` (request parameters), ``answers`` (response bodies),
``metrics`` (Prometheus), ``server`` (uvicorn, workers, the graceful stop), ``page/`` (the
browser page). Imports the API and render; its options live in :mod:`onnxcam.cli.serve`.
"""
