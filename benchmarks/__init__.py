"""The benchmarks: scripts (``bench.py``, which ``onnxcam bench`` runs, ``families.py``,
``split.py``, ``stages.py``, ``serve.py``, ...) on top of the shared modules: ``side_by_side``
(each contender in its own process, taking turns), ``contenders`` (what a child times) and
``exports`` (the files they time). Their last figures are in ``results/``."""
