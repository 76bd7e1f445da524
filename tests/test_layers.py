"""The layers under node/ point down only: no package imports one that imports it back.

Walks every module's imports with `ast` (module-level and inside functions alike), so a cycle
hidden in a function body counts too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import node

ROOT = Path(node.__file__).parent
# What storage may build on: the domain and the leaf modules every layer shares.
STORAGE_MAY_IMPORT = frozenset({"storage", "domain", "errors", "types", "config", "logging"})


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for stmt in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(stmt, ast.Import):
            found.update(alias.name for alias in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            if stmt.level:
                base = package.split(".")
                base = base[: len(base) - stmt.level + 1]
                stem = ".".join(base + ([stmt.module] if stmt.module else []))
            else:
                stem = stmt.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in stmt.names)
    return {name for name in found if name == "node" or name.startswith("node.")}


def _layer(module: str) -> str | None:
    """`node.client.jobs` → `client`; a top-level module (`node.app`) is its own layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer_graph() -> dict[str, set[str]]:
    known = {_module_name(p) for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        module = _module_name(path)
        source = _layer(module)
        if source is None:
            continue
        for name in _imported(path, module):
            if name not in known:
                continue
            target = _layer(name)
            if target is not None and target != source:
                graph[source].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one layer (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _edges_within(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    members = set(component)
    return sorted(f"{a} -> {b}" for a in component for b in graph.get(a, ()) if b in members)


def test_cannot_find_a_package_cycle_under_node() -> None:
    graph = _layer_graph()
    cycles = {" ".join(c): _edges_within(graph, c) for c in _cycles(graph)}
    assert cycles == {}


def test_storage_imports_nothing_above_the_domain() -> None:
    assert _layer_graph()["storage"] <= STORAGE_MAY_IMPORT


def test_the_api_makes_no_chain_or_p2p_calls_of_its_own() -> None:
    assert not _layer_graph()["api"] & {"chain", "p2p", "client", "provider", "settlement"}


def test_the_http_face_makes_no_chain_or_p2p_calls_of_its_own() -> None:
    assert "http" in _layer_graph()
    assert not _layer_graph()["http"] & {"chain", "p2p", "client", "provider", "settlement", "discovery"}


def test_settlement_builds_on_neither_pipeline() -> None:
    assert not _layer_graph()["settlement"] & {"client", "provider"}


def test_the_domain_does_no_io() -> None:
    assert _layer_graph()["domain"] <= {"errors", "types", "executor"}


def test_can_see_a_cycle_hidden_in_a_function_body(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from node.client import jobs\n    from .. import errors\n")
    assert {"node.client.jobs", "node.errors"} <= _imported(module, "node.storage.m")
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
