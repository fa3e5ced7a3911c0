"""The layout shows the architecture: `digest_api` is imported by every component and imports none; components
import only the API (the local cluster also drives the worker and the emulator); only the CLI wires them together;
no two modules import each other, directly or round a longer loop (lazy and type-checking imports count)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.samples import ROOT

PACKAGES = {
    "digest_api": "api",
    "digest_operator": "operator",
    "digest_worker": "worker",
    "digest_dlq": "dlq",
    "digest_sbemulator": "emulator",
    "digest_cluster": "cluster",
    "digest_cli": "cli",
}
ALLOWED = {
    "digest_api": set(),
    "digest_operator": {"digest_api"},
    "digest_worker": {"digest_api"},
    "digest_dlq": {"digest_api"},
    "digest_sbemulator": set(),
    "digest_cluster": {"digest_api", "digest_worker"},
    "digest_cli": set(PACKAGES) - {"digest_cli"},
}
"""Which of our packages each package may import."""


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        root = ROOT / folder
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (a `from p import m` of a submodule names p.m)."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in out if m in known and m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_package_states_its_purpose() -> None:
    for package, folder in PACKAGES.items():
        tree = ast.parse((ROOT / folder / package / "__init__.py").read_text(encoding="utf-8"))
        assert (ast.get_docstring(tree) or "").strip(), f"{package}/__init__.py has no docstring"


def test_packages_import_only_what_the_architecture_allows(graph: dict[str, set[str]]) -> None:
    wrong = sorted(f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
                   if (a := src.split(".")[0]) != (b := dst.split(".")[0]) and b not in ALLOWED[a])
    assert wrong == []


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_graph_sees_imports() -> None:
    """The oracle itself: a lazy import inside a function and a type-checking import are both edges."""
    known = {"digest_worker.db.store", "digest_worker.db.statements", "digest_sbemulator.management",
             "digest_sbemulator.connection"}
    assert "digest_worker.db.statements" in _imports(
        "digest_worker.db.store", ROOT / "worker/digest_worker/db/store.py", known)
    assert "digest_sbemulator.management" in _imports(
        "digest_sbemulator.connection", ROOT / "emulator/digest_sbemulator/connection.py", known)
