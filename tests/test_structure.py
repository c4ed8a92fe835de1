"""The tree's shape, read from the source with ``ast`` (nothing is imported): no import cycle
among the modules of ``onnxcam``, ``onnxcam_export`` (the folder export/) and ``benchmarks``,
lazy imports inside functions included; the runtime never imports the export side nor torch;
every package says what it holds in its docstring."""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from support.imports import cycles, import_graph, module_files
from support.paths import ROOT

# the distribution's import name -> its folder in the checkout
# (export/pyproject.toml maps onnxcam_export.models to the zoo's folder models/)
PACKAGES = {"onnxcam": ROOT / "onnxcam", "onnxcam_export": ROOT / "export",
            "onnxcam_export.models": ROOT / "models", "benchmarks": ROOT / "benchmarks"}
TORCH = {"torch", "torchvision", "timm"}  # timm imports torch
# onnxcam's layers, bottom to top, as onnxcam/__init__.py lists them: each imports only the
# layers below it (errors, progress and quiet serve every layer; the command line is on top)
LAYERS = [("errors", "progress", "quiet"), ("runtime",), ("images",), ("methods",), ("render",), ("api",),
          ("metrics",), ("serve", "distributed"), ("cli",), ("__main__",)]


@pytest.fixture(scope="module")
def tree():
    modules = module_files(PACKAGES)
    return modules, *import_graph(modules)


def test_the_scan_sees_every_package_and_its_modules(tree):
    modules, edges, *_ = tree
    assert {"onnxcam.runtime.session", "onnxcam.cli.main", "onnxcam_export.passes.onnx.graph_edits",
            "onnxcam_export.exporter", "benchmarks.bench"} <= set(modules)
    assert sum(len(targets) for targets in edges.values()) > len(modules)  # the edges are there


def test_every_import_of_the_trees_own_modules_finds_its_module(tree):
    """An import of a module that moved (``onnxcam.imageops``) or of a missing submodule."""
    *_, missing = tree
    assert not {module: sorted(names) for module, names in missing.items() if names}


def test_no_import_cycle(tree):
    _, edges, *_ = tree
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_runtime_imports_neither_the_export_side_nor_torch(tree):
    modules, _, roots, _ = tree
    runtime = [module for module in modules if module.partition(".")[0] == "onnxcam"]
    assert len(runtime) > 30
    wrong = {module: sorted(roots[module] & (TORCH | {"onnxcam_export"})) for module in runtime}
    assert not {module: names for module, names in wrong.items() if names}


def test_each_layer_of_the_runtime_imports_only_the_layers_below(tree):
    modules, edges, *_ = tree
    level = {name: rank for rank, names in enumerate(LAYERS) for name in names}
    runtime = [module for module in modules if module.startswith("onnxcam.")]
    assert {module.split(".")[1] for module in runtime} == set(level)  # every layer is placed
    upward = [f"{module} -> {target}" for module in runtime for target in sorted(edges[module])
              if target.startswith("onnxcam.") and module.split(".")[1] != target.split(".")[1]
              and level[target.split(".")[1]] >= level[module.split(".")[1]]]
    assert not upward, upward


def test_every_package_has_a_docstring():
    packages = [*(ROOT / "onnxcam").rglob("__init__.py"), ROOT / "export" / "__init__.py",
                *(ROOT / "export" / "passes").rglob("__init__.py")]
    assert len(packages) >= 14
    missing = [str(path.relative_to(ROOT)) for path in packages if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, missing


# ---------------------------------------------------------------- the checks fail when they should

def _write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text))
    return module_files({"pkg": folder / "pkg"})


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": '"""A package."""\nfrom pkg.a import f\n',
        "pkg/a.py": "from pkg import b\n\ndef f():\n    return b.g()\n",
        "pkg/b.py": "def g():\n    from pkg.sub.c import h\n    return h()\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import pkg.a\n\ndef h():\n    return 1\n",
        "pkg/d.py": "from . import a\nfrom .sub import c\n",  # relative imports, no cycle
    })
    edges, _, missing = import_graph(modules)
    assert not any(missing.values())
    assert edges["pkg.a"] == {"pkg.b"}  # pkg.b is a module: no edge to the package itself
    assert edges["pkg.d"] == {"pkg.a", "pkg.sub.c"}
    assert edges["pkg"] == {"pkg.a"}
    assert cycles(edges) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_an_import_of_a_name_from_a_package_is_an_edge_to_the_package(tmp_path):
    """... and an import of a module of the package that is not there is reported."""
    modules = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.a import f\n",
        "pkg/a.py": "def f():\n    import importlib\n    return importlib.import_module('pkg.b')\n",
        "pkg/b.py": "from pkg import f\nimport torch.nn\n",
        "pkg/c.py": "from pkg.gone import f\nimport pkg.old.place\nfrom pkg.a import f\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import f\n    import pkg.e\n",
    })
    edges, roots, missing = import_graph(modules)
    assert missing["pkg.c"] == {"pkg.gone", "pkg.old.place"} and not missing["pkg.b"]
    assert not edges["pkg.d"] and missing["pkg.d"] == {"pkg.e"}  # typing-only: no edge, still checked
    assert edges["pkg.b"] == {"pkg"} and edges["pkg.a"] == {"pkg.b"}
    assert cycles(edges) == [["pkg", "pkg.a", "pkg.b", "pkg"]]
    assert roots["pkg.b"] & TORCH == {"torch"}
    assert not ast.get_docstring(ast.parse(modules["pkg"].read_text()))
