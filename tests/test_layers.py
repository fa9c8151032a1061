"""The layer rule of docs/ARCHITECTURE.md, read from the source: every import of every module of
pipeline/, flows/, sinks/ and ui/ (module level and inside functions alike, since a deferred
import is still a dependency; not those under ``if TYPE_CHECKING:``, which never run) is parsed
with ``ast``, and the test fails on

- an import cycle among the project's modules;
- a module of the pure core (pipeline/ except pipeline/cli and pipeline/tools) importing the
  stores, the viewer, the flows, the tools, the CLI, or a client of a broker, a database, a
  process or a socket;
- any module outside pipeline/cli importing pipeline/cli (the outermost layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows", "sinks", "ui")
EDGE = ("pipeline.cli", "pipeline.tools")  # the task layer inside pipeline/
CORE_MAY_NOT_IMPORT = ("sinks", "ui", "flows", "pipeline.tools", "pipeline.cli", "paho", "psycopg",
                       "psycopg_pool", "sqlite3", "subprocess", "socket", "streamlit")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module ``name`` imports; ``from a import b`` counts as ``a.b`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in known else source)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def test_the_walk_sees_the_layers(graph):
    """A walk that found nothing would pass every rule below."""
    for expected in ("pipeline.records", "pipeline.cli", "pipeline.tools.broker", "sinks.stores",
                     "flows.ingest", "ui.app"):
        assert expected in graph
    assert "sinks.sqlite" in graph["sinks.stores"]
    assert "paho.mqtt.client" in graph["pipeline.tools.publisher"]


def test_no_import_cycle(graph):
    internal = {name: {m for m in deps if m in graph and m != name} for name, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(internal[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(internal):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_core_does_no_io_and_knows_no_outer_layer(graph):
    crossings = [
        f"{name} imports {dep}"
        for name, deps in sorted(graph.items())
        if within(name, "pipeline") and not any(within(name, edge) for edge in EDGE)
        for dep in sorted(deps)
        if any(within(dep, banned) for banned in CORE_MAY_NOT_IMPORT)
    ]
    assert not crossings, "\n".join(crossings)


def test_nothing_imports_the_cli(graph):
    crossings = [f"{name} imports {dep}" for name, deps in sorted(graph.items())
                 if not within(name, "pipeline.cli") for dep in sorted(deps) if within(dep, "pipeline.cli")]
    assert not crossings, "\n".join(crossings)


def test_the_rule_catches_a_crossing(tmp_path):
    """The walker itself: a core module that imports a store is found, through a deferred import."""
    fake = tmp_path / "pipeline" / "bad.py"
    fake.parent.mkdir()
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ui.app\n"
                    "def f():\n    from sinks.stores import open_store\n    import socket\n")
    found = imports_of("pipeline.bad", fake, {"sinks.stores"})
    assert found == {"typing", "sinks.stores", "socket"}
