"""The runtime's wheel (what ``pip install onnxcam`` installs) holds the runtime's packages
alone, no code that imports torch or the export side, and requires neither."""
from __future__ import annotations

import subprocess
import sys
import zipfile

from support.imports import imported_roots
from support.paths import ROOT


def test_runtime_wheel_holds_no_torch_code(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("onnxcam-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {name: archive.read(name).decode() for name in names if name.endswith(".py")}
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    packages = {str(path.parent.relative_to(ROOT)) for path in (ROOT / "onnxcam").rglob("__init__.py")}
    assert {name.rpartition("/")[0] for name in sources} == packages  # every package, nothing else
    assert "onnxcam/api/explainer.py" in sources and "onnxcam/serve/page/index.html" in names
    for name, source in sources.items():
        assert not imported_roots(source, name) & {"torch", "torchvision", "timm", "onnxcam_export"}, name
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [line for line in requires if "extra ==" not in line and ("torch" in line or "onnxcam-export" in line)]
