#!/usr/bin/env python3
"""The project's import graph: circles between its modules and imports against the layering.

Reads the source (no imports run), counting imports inside functions too, and prints every
import circle (a strongly connected set of modules) and every import of a higher app from a
lower one (``core`` ← ``hosts`` ← ``storage``, ``migrations_app``; ``lab`` stands alone).
Exit status 1 when it finds either. ``tests/unit/test_architecture.py`` runs the same checks.

    python scripts/import_graph.py [ROOT]
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("core", "hosts", "storage", "migrations_app", "maintenance", "calendar_app", "fleet", "guest_state", "recovery", "vmportal", "lab")
# An app may import only apps of a lower layer; vmportal (settings, urls, asgi) wires them all.
# Of the two apps built on hosts, migrations_app may use storage (a cold migration's target
# can be a share), never the other way round.
LAYER = {"core": 0, "hosts": 1, "storage": 2, "migrations_app": 2, "maintenance": 3, "calendar_app": 4, "fleet": 4, "guest_state": 3, "recovery": 4}
SIBLINGS_MAY_IMPORT = {("migrations_app", "storage")}  # migration forms offer storage's shares


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            rel = path.relative_to(root)
            if "migrations" in rel.parts[1:-1] and rel.parts[1] == "migrations":
                continue  # Django schema migrations
            name = ".".join(rel.with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)

    def resolve(name: str) -> str:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".") if is_package else name.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in mods else resolve(base))
            edges[name].update(t for t in targets if t and t != name)
    for name in mods:
        edges.setdefault(name, set())
    return dict(edges)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
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
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(found)


def against_layers(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where an app imports one above it, or lab imports the portal."""
    bad = []
    for importer, targets in sorted(edges.items()):
        a = importer.split(".")[0]
        for target in sorted(targets):
            b = target.split(".")[0]
            if a == b:
                continue
            if a == "lab" and b != "lab":
                bad.append((importer, target))
            elif a in LAYER and b in LAYER and LAYER[b] >= LAYER[a] and (a, b) not in SIBLINGS_MAY_IMPORT:
                bad.append((importer, target))
    return bad


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent)
    edges = graph(root)
    found = circles(edges)
    upward = against_layers(edges)
    for component in found:
        print(f"circle of {len(component)}: {' '.join(component)}")
    for importer, target in upward:
        print(f"against the layers: {importer} imports {target}")
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, "
          f"{len(found)} circle(s), {len(upward)} import(s) against the layers")
    return 1 if found or upward else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
