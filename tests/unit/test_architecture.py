"""The structure ARCHITECTURE.md describes, checked: no import circles, no import against the
layers (core ← hosts ← storage, migrations_app), counting imports inside functions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


@pytest.fixture(scope="module")
def edges():
    return import_graph.graph(ROOT)


def test_the_graph_sees_imports_inside_functions(edges):
    # apps.py imports its reconciler inside a function (the app registry is not ready at load).
    assert "migrations_app.reconciler" in edges["migrations_app.apps"]


def test_no_import_circles(edges):
    assert import_graph.circles(edges) == []


def test_no_import_against_the_layers(edges):
    assert import_graph.against_layers(edges) == []


@pytest.mark.parametrize(
    ("edges", "circles", "against"),
    [
        ({"hosts.a": {"hosts.b"}, "hosts.b": {"hosts.a"}}, [["hosts.a", "hosts.b"]], []),
        ({"hosts.a": {"hosts.b"}, "hosts.b": {"hosts.c"}, "hosts.c": {"hosts.a"}},
         [["hosts.a", "hosts.b", "hosts.c"]], []),
        ({"hosts.views": {"migrations_app.models"}, "migrations_app.models": set()}, [],
         [("hosts.views", "migrations_app.models")]),
        ({"core.jobs": {"hosts.models"}, "hosts.models": {"core.models"}, "core.models": set()}, [],
         [("core.jobs", "hosts.models")]),
        ({"storage.x": {"migrations_app.y"}, "migrations_app.y": {"storage.z"}, "storage.z": set()}, [],
         [("storage.x", "migrations_app.y")]),
        ({"lab.hosts": {"hosts.models"}, "hosts.models": set()}, [], [("lab.hosts", "hosts.models")]),
        ({"migrations_app.a": {"hosts.b", "core.c"}, "hosts.b": {"core.c"}, "core.c": set()}, [], []),
    ],
)
def test_circles_and_layers_as_a_table(edges, circles, against):
    assert import_graph.circles(edges) == circles
    assert import_graph.against_layers(edges) == against


# Opening SSH or libvirt is the host-access port's job (hosts/access.py); the adapters define how.
_OPENERS = {"SSHSession", "open_connection"}
_MAY_OPEN = ("hosts/access.py", "hosts/adapters/")


def _calls_to_openers(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _OPENERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}()")
    return found


def test_only_the_host_access_port_opens_connections_to_hosts():
    found = []
    for package in ("core", "hosts", "storage", "migrations_app", "maintenance", "vmportal"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if not str(path.relative_to(ROOT)).startswith(_MAY_OPEN):
                found += _calls_to_openers(path)
    assert found == []


def test_the_opener_check_sees_a_call():
    sample = ROOT / "hosts" / "access.py"
    assert any("SSHSession()" in line for line in _calls_to_openers(sample))
