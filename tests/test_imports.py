"""The architecture's import rules, checked on every import, those inside functions included.

Data flows host -> models/ -> board, so: no import cycles anywhere in host/ and device/ (a cycle
hidden inside a function is still a cycle: the two modules cannot be understood, tested or moved
apart), and device/ (the board's runner) never imports host/. Pure `ast`, no module is executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("host", "device")


@dataclass(frozen=True)
class Edge:
    target: str
    file: str
    line: int


def modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (a package is its __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The most specific known module that `name` (a.b.c, maybe a.b.function) refers to."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement loads (`from a import b`: a.b, a submodule or a name in a)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, list[Edge]]:
    """Module -> the first-party modules it imports, anywhere in its file (ast.walk, not just the top)."""
    known = modules(root, packages)
    graph: dict[str, list[Edge]] = {name: [] for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for dotted in _targets(node, name, path.name == "__init__.py"):
                target = _resolve(dotted, known)
                if target is not None:
                    graph[name].append(Edge(target, str(path.relative_to(root)), node.lineno))
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself
    (Tarjan's algorithm, iterative so deep graphs cannot overflow the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for edge in edges:
                nxt = edge.target
                if nxt not in graph or nxt == node:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    self_import = any(e.target == node for e in graph[node])
                    if len(component) > 1 or self_import:
                        found.append(sorted(component))
    return found


def describe(graph: dict[str, list[Edge]], component: list[str]) -> str:
    """The imports that tie a cycle's modules together, each with its file and line."""
    members = set(component)
    edges = dict.fromkeys(f"{m} -> {e.target} ({e.file}:{e.line})" for m in component for e in graph[m]
                          if e.target in members)
    return "; ".join(edges)


def crossings(graph: dict[str, list[Edge]], source: str, forbidden: str) -> list[str]:
    """Imports from package `source` into package `forbidden`, as 'file:line module -> target'."""
    return [f"{e.file}:{e.line} {m} -> {e.target}" for m, edges in graph.items() if m.split(".")[0] == source
            for e in edges if e.target.split(".")[0] == forbidden]


def test_no_import_cycles_in_host_and_device():
    graph = import_graph(ROOT)
    assert len(graph) > 40  # the walk found the packages
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe(graph, c) for c in found)


def test_device_never_imports_host():
    found = crossings(import_graph(ROOT), "device", "host")
    assert not found, "device/ must stand alone on the board:\n" + "\n".join(found)


def _package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_sees_a_cycle_hidden_inside_a_function(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg.a import thing\n    return thing\n",
        "pkg/c.py": "from pkg import a\n",  # imports into the cycle without being part of it
    })
    graph = import_graph(root, ("pkg",))
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert "pkg.b -> pkg.a (pkg/b.py:2)" in describe(graph, ["pkg.a", "pkg.b"])


def test_the_checker_sees_relative_imports_and_a_board_importing_the_host(tmp_path):
    root = _package(tmp_path, {
        "host/__init__.py": "", "host/x.py": "from .y import z\n", "host/y.py": "from . import x\nz = 1\n",
        "device/__init__.py": "", "device/run.py": "import numpy\n\ndef go():\n    import host.x\n",
    })
    graph = import_graph(root)
    assert cycles(graph) == [["host.x", "host.y"]]
    assert crossings(graph, "device", "host") == ["device/run.py:4 device.run -> host.x"]
