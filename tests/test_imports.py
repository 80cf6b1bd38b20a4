"""The architecture's import rules, checked on every import, those inside functions included.

Data flows host -> models/ -> board, so: no import cycles anywhere in host/, device/ and
firmware_tests/ (a cycle hidden inside a function is still a cycle: the two modules cannot be
understood, tested or moved apart), and what a release carries to the board, device/ (the runner)
and firmware_tests/ (its on-board tests), never imports host/, since it must stand alone there.
Pure `ast` and the standard library: no module is executed, nothing heavy is imported.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("host", "device", "firmware_tests")
BOARD_PACKAGES = ("device", "firmware_tests")  # what a release carries to the board besides the models

Graph = dict[str, list["Edge"]]


@dataclass(frozen=True)
class Edge:
    """One import site: the module it loads and where it is written, so a failure can point at it."""
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
    """The most specific known module that `name` (a.b.c, maybe a.b.function) refers to.

    Parent packages get no edge of their own: their __init__ files hold only docstrings, and an
    edge to them would only hide which module really depends on which."""
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


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """Module -> the first-party modules it imports, anywhere in its file (ast.walk, not just the top),
    because an import inside a function, an `if` or a `try` ties the two modules together as well."""
    known = modules(root, packages)
    graph: Graph = {name: [] for name in known}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for dotted in _targets(node, name, path.name == "__init__.py"):
                target = _resolve(dotted, known)
                if target is not None:
                    graph[name].append(Edge(target, path.relative_to(root).as_posix(), node.lineno))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself, each
    sorted (Tarjan's algorithm, iterative so a deep graph cannot overflow the stack)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)

    for start in graph:
        if start in index:
            continue
        visit(start)
        work = [(start, iter(graph[start]))]
        while work:
            node, edges = work[-1]
            for edge in edges:
                nxt = edge.target
                if nxt not in graph or nxt == node:
                    continue
                if nxt not in index:
                    visit(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:  # every edge of `node` followed: close it
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = _pop_component(stack, on_stack, node)
                    if len(component) > 1 or any(e.target == node for e in graph[node]):
                        found.append(sorted(component))
    return sorted(found)


def _pop_component(stack: list[str], on_stack: set[str], root: str) -> list[str]:
    """Tarjan's last step: the stack down to `root` is one strongly connected component."""
    component = []
    while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == root:
            return component


def _shortest_cycle(graph: Graph, start: str, members: set[str]) -> list[str]:
    """The shortest closed path start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in graph[node]:
            if edge.target == start:
                path = [node]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                return path[::-1] + [start]
            if edge.target in members and edge.target not in previous:
                previous[edge.target] = node
                queue.append(edge.target)
    raise AssertionError(f"{start} is not on a cycle")


def cycle_paths(graph: Graph, component: list[str]) -> list[list[str]]:
    """Closed paths (a, b, a) that between them pass through every module of the component,
    so the message names each module that has to move."""
    members, covered, paths = set(component), set(), []
    for start in component:
        if start not in covered:
            path = _shortest_cycle(graph, start, members)
            covered.update(path)
            paths.append(path)
    return paths


def describe(graph: Graph, path: list[str]) -> str:
    """`a -> b -> a`, then each of its imports with the file and line(s) that write it."""
    lines = [" -> ".join(path)]
    for source, target in zip(path, path[1:]):
        sites = [e for e in graph[source] if e.target == target]
        where = ", ".join(dict.fromkeys(f"{e.file}:{e.line}" for e in sites))
        lines.append(f"    {source} -> {target}  ({where})")
    return "\n".join(lines)


def report(graph: Graph) -> list[str]:
    """Every cycle of the graph, grouped by strongly connected component; empty when there is none."""
    return [f"{len(component)} module(s) tied together: {', '.join(component)}\n"
            + "\n".join(describe(graph, path) for path in cycle_paths(graph, component))
            for component in cycles(graph)]


def crossings(graph: Graph, source: str, forbidden: str) -> list[str]:
    """Imports from package `source` into package `forbidden`, as 'file:line module -> target'."""
    return [f"{e.file}:{e.line} {m} -> {e.target}" for m, edges in graph.items() if m.split(".")[0] == source
            for e in edges if e.target.split(".")[0] == forbidden]


def test_no_import_cycles_in_host_device_and_firmware_tests():
    graph = import_graph(ROOT)
    assert len(graph) > 40  # the walk found the packages
    found = report(graph)
    if found:
        header = f"import cycles in {', '.join(p + '/' for p in PACKAGES)} ({len(found)} group(s) of modules):"
        pytest.fail("\n".join([header, *found]), pytrace=False)


def test_what_goes_to_the_board_never_imports_host():
    graph = import_graph(ROOT)
    assert any(m.startswith("firmware_tests.") for m in graph)  # the walk found the on-board tests
    found = [line for package in BOARD_PACKAGES for line in crossings(graph, package, "host")]
    if found:
        header = "device/ and firmware_tests/ must stand alone on the board, but they import host/:"
        pytest.fail("\n".join([header, *found]), pytrace=False)


def _package(root: Path, files: dict[str, str]) -> Path:
    """Write a small fake source tree, so the checker can be shown to fail."""
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
    assert report(graph) == ["2 module(s) tied together: pkg.a, pkg.b\n"
                             "pkg.a -> pkg.b -> pkg.a\n"
                             "    pkg.a -> pkg.b  (pkg/a.py:1)\n"
                             "    pkg.b -> pkg.a  (pkg/b.py:2)"]


def test_the_checker_sees_imports_in_methods_ifs_trys_and_self_imports(tmp_path):
    root = _package(tmp_path, {
        "pkg/__init__.py": "", "pkg/sub/__init__.py": "",
        "pkg/a.py": "class A:\n    def m(self):\n        if True:\n            import pkg.sub.b\n",
        "pkg/sub/b.py": "try:\n    from ..c import x\nexcept ImportError:\n    pass\n",
        "pkg/c.py": "from pkg import a\nx = 1\n",
        "pkg/d.py": "from . import d\n",
    })
    graph = import_graph(root, ("pkg",))
    assert cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"], ["pkg.d"]]
    assert report(graph)[0].splitlines()[1] == "pkg.a -> pkg.sub.b -> pkg.c -> pkg.a"
    assert report(graph)[1].splitlines()[1] == "pkg.d -> pkg.d"


def test_the_checker_sees_relative_imports_and_a_board_importing_the_host(tmp_path):
    root = _package(tmp_path, {
        "host/__init__.py": "", "host/x.py": "from .y import z\n", "host/y.py": "from . import x\nz = 1\n",
        "device/__init__.py": "", "device/run.py": "import numpy\n\ndef go():\n    import host.x\n",
        # firmware_tests/ is no package (pytest's rootdir, no __init__.py), and is walked all the same
        "firmware_tests/conftest.py": "import device.run\n",
        "firmware_tests/test_x.py": "def test_x():\n    from host.y import z\n",
    })
    graph = import_graph(root)
    assert cycles(graph) == [["host.x", "host.y"]]
    assert crossings(graph, "device", "host") == ["device/run.py:4 device.run -> host.x"]
    assert crossings(graph, "firmware_tests", "host") == ["firmware_tests/test_x.py:2 firmware_tests.test_x -> host.y"]
    assert [e.target for e in graph["firmware_tests.conftest"]] == ["device.run"]


def test_the_tuning_chief_starts_its_workers_before_tensorflow_loads():
    """`grasptpu tune --workers` overlaps the start-ups (host.train.tune.serve): the modules it runs
    before make_tuner must not import TensorFlow, Keras or KerasTuner."""
    import subprocess
    import sys

    code = ("import sys, host.cli, host.train.tune, host.train.distributed, host.data.prepare; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'keras_tuner', 'grpc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out
