"""The composition root's modules import in one direction (issue 12, item 3).

import-linter checks the layers between the packages; inside ``basewatch`` nothing did, and a
circle grew there: ``cli`` imported the ``*_commands`` modules, which imported ``emit`` and
``add`` back from ``cli`` (inside their functions, where an import cycle does not fail at import
time, so no tool saw it). This test reads every ``basewatch/*.py`` with :mod:`ast`, counts every
import of a ``basewatch`` module wherever it stands (module level, inside a function, under
``TYPE_CHECKING``) and fails on any cycle, and on any module but the entry point
(``basewatch/__main__.py``) importing ``basewatch.cli``: the CLI module is the top of the
graph, everything else is below it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "basewatch"
ENTRY_POINT = "basewatch.__main__"
CLI = "basewatch.cli"


def _modules() -> dict[str, Path]:
    return {f"basewatch.{path.stem}": path for path in sorted(PACKAGE.glob("*.py"))}


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The ``basewatch`` modules ``tree`` imports (``from basewatch import x`` names module x)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module name -> the ``basewatch`` modules it imports (itself excluded)."""
    modules = _modules()
    names = set(modules)
    return {
        name: _imported(ast.parse(path.read_text(encoding="utf-8")), names) - {name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module: the modules that import one
    another, directly or not (Tarjan's algorithm; self-imports are not edges here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A path inside ``component`` from its first module back to it (for the message)."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                frontier.append(target)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_the_composition_root_has_no_import_cycle() -> None:
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in basewatch: " + "; ".join(
        f"{' -> '.join(closed_path(graph, c))} (modules importing one another: "
        f"{', '.join(sorted(c))})"
        for c in found
    )


def test_only_the_entry_point_imports_the_cli_module() -> None:
    importers = sorted(name for name, deps in import_graph().items() if CLI in deps)
    assert importers == [ENTRY_POINT]


def test_the_checks_see_imports_inside_functions() -> None:
    """The circle this test exists for hid in function bodies: the graph must see those."""
    source = "def f():\n    from basewatch.b import x\n\nimport basewatch.c\n"
    modules = {"basewatch.a", "basewatch.b", "basewatch.c"}
    assert _imported(ast.parse(source), modules) == {"basewatch.b", "basewatch.c"}
    graph = {"basewatch.a": {"basewatch.b"}, "basewatch.b": {"basewatch.a"}, "basewatch.c": set()}
    assert cycles(graph) == [{"basewatch.a", "basewatch.b"}]
    assert closed_path(graph, {"basewatch.a", "basewatch.b"}) == [
        "basewatch.a",
        "basewatch.b",
        "basewatch.a",
    ]
