"""The main pass (`onnxcam.runtime.runner.GraphRunner`): IO binding gives the plain runs' outputs."""
from __future__ import annotations

import numpy as np

from onnxcam.runtime.runner import GraphRunner
from onnxcam.runtime.session import open_session

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def test_io_binding_path_matches_plain_runs(synthetic):
    """The CUDA path (IO binding) exercised on the CPU gives the plain run's outputs; it is
    chosen by default exactly when CUDA is the session's first provider."""
    session, info = open_session(synthetic.path)
    x = np.random.default_rng(3).standard_normal((2, 3, 24, 32)).astype(np.float32)
    targets = np.array([[-1, 2], [0, -2]])
    fetch = ["logits", "target_indices", "gradients/feat"]
    plain = GraphRunner(session, info, synthetic.path)
    bound = GraphRunner(session, info, synthetic.path, io_binding=True)
    assert not plain.io_binding and bound.device == "cpu"
    for a, b in zip(plain.run(fetch, x, targets), bound.run(fetch, x, targets)):
        np.testing.assert_array_equal(a, b)

    class CudaSession:  # what a session on onnxruntime-gpu reports
        def get_providers(self):
            return [CUDA, CPU]

        def get_inputs(self):
            return session.get_inputs()

        def get_outputs(self):
            return session.get_outputs()

    on_gpu = GraphRunner(CudaSession(), info, synthetic.path)
    assert on_gpu.io_binding and on_gpu.device == "cuda"

