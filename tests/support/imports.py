"""The import graph of a tree of packages, read from the source with ``ast`` (nothing is
imported): which modules each module imports, at any depth (functions too), and the cycles."""
from __future__ import annotations

import ast
from pathlib import Path


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Dotted module name -> file of every .py under each package folder (a package is its
    ``__init__``); hidden folders (a benchmark's cache, ``benchmarks/.corpus``) hold no modules."""
    modules = {}
    for name, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if any(part.startswith(".") for part in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((name, *parts))] = path
    return modules


def _origin(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The module a ``from ... import`` reads from, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = (module if path.name == "__init__.py" else module.rpartition(".")[0]).split(".")
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, modules: dict[str, Path]) -> str:
    """The longest of a.b.c, a.b, a that is one of ``modules`` ('' if none)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str, path: Path, modules: dict[str, Path],
            source: str | None = None) -> tuple[set[str], set[str], set[str]]:
    """(the ``modules`` that ``module`` imports, the top-level package of everything it
    imports, the modules of the scanned packages it imports that do not exist), from every
    import statement at any depth (functions too).

    ``import a.b.c`` is an edge to the longest of a.b.c, a.b, a that is a module (the parents'
    ``__init__`` run first, but they are not edges: a package that re-exports its submodules
    would otherwise close a cycle with each of them); ``from pkg import name`` is an edge to
    pkg.name where that is a module, else to pkg; ``importlib.import_module("x")`` of a
    constant is an import of x. Imports under ``if TYPE_CHECKING:`` never run: they are no
    edges, but they count for the packages imported and the missing modules."""
    targets, roots, missing = set(), set(), set()
    ours = {name.partition(".")[0] for name in modules}
    tree = ast.parse(path.read_text() if source is None else source, str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node.test)
                   for statement in node.body for inner in ast.walk(statement)}

    def add(name: str) -> None:
        roots.add(name.partition(".")[0])
        known = _known(name, modules)
        if name.partition(".")[0] in ours and known != name:
            missing.add(name)
        if known and known != module and id(node) not in typing_only:
            targets.add(known)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            origin = _origin(node, module, path)
            submodules = [f"{origin}.{alias.name}" for alias in node.names]
            for name in submodules:
                if name in modules:
                    add(name)
            if not all(name in modules for name in submodules):
                add(origin)
            elif origin.partition(".")[0] in ours and origin not in modules:
                missing.add(origin)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    return targets, roots, missing


def import_graph(modules: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the modules it imports, module -> the top-level packages it imports,
    module -> the modules of ours it imports that do not exist)."""
    edges, roots, missing = {}, {}, {}
    for module, path in modules.items():
        edges[module], roots[module], missing[module] = imports(module, path, modules)
    return edges, roots, missing


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a, b, ..., a) through each strongly connected component that has one
    (Tarjan's algorithm, then a shortest way back to the component's first module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    found = []
    for component in components:
        inside, start = set(component), component[0]
        paths, seen = {start: [start]}, {start}
        queue = [start]
        while queue:  # breadth first, back to start
            node = queue.pop(0)
            for other in sorted(edges[node] & inside):
                if other == start:
                    queue = []
                    found.append(paths[node] + [start])
                    break
                if other not in seen:
                    seen.add(other)
                    paths[other] = paths[node] + [other]
                    queue.append(other)
    return found


def imported_roots(source: str, name: str = "module.py") -> set[str]:
    """The top-level package of everything ``source`` (the file ``name``) imports, at any depth."""
    return imports(Path(name).stem, Path(name), {}, source)[1]
