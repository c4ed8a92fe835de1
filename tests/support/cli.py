"""The ``onnxcam`` command as a user runs it: a subprocess of this Python, with the checkout
first on PYTHONPATH."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.paths import ROOT


def run_cli(*args, cwd: Path | None = None, env: dict | None = None, pythonpath: tuple = (),
            timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m onnxcam ARGS`` in ``cwd``; ``pythonpath`` goes before the checkout, ``env``
    over the environment."""
    path = os.pathsep.join([*map(str, pythonpath), str(ROOT)])
    return subprocess.run([sys.executable, "-m", "onnxcam", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": path, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The one line a failed command wrote to stderr (no traceback), holding every needle."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
