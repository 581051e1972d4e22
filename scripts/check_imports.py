#!/usr/bin/env python3
"""Static import graph of ``backend/``: print every import cycle, exit 1 if there is one.

Every ``import`` / ``from ... import`` in a module counts, at module level or inside a function (a lazy import
still ties the two modules together). An edge goes from the importing module to the deepest ``backend``
module named (``from backend.render import cameras`` names ``backend.render.cameras`` when that module
exists, else the package ``backend.render``). Importing a name from a package counts as importing the
package's ``__init__``, which stays free of logic. A cycle is a strongly connected component of more than one
module (or a module importing itself).

Usage: python scripts/check_imports.py [--root backend] [--graph]
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def module_name(path: Path, root: Path) -> str:
    """``backend/render/cameras.py`` -> ``backend.render.cameras``; ``__init__.py`` names its package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect_modules(root: Path) -> dict[str, Path]:
    """Every module under ``root`` keyed by dotted name."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest existing module that ``name`` (a dotted path, maybe ending in an attribute) refers to."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path], top: str) -> set[str]:
    """The in-package modules that ``module`` imports, statically."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    target = _resolve(alias.name, modules)
                    if target:
                        found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix.split(".")[0] != top:
                continue
            for alias in node.names:
                target = _resolve(f"{prefix}.{alias.name}", modules)
                if target:
                    found.add(target)
    found.discard(module)  # ``from backend.x import name`` inside backend/x/__init__.py names itself
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in reverse topological order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = collect_modules(root)
    return {name: imports_of(name, path, modules, root.name) for name, path in modules.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent / "backend"))
    parser.add_argument("--graph", action="store_true", help="also print every edge")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    graph = import_graph(root)
    if args.graph:
        for name in sorted(graph):
            for target in sorted(graph[name]):
                print(f"{name} -> {target}")
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    for component in cycles:
        print("import cycle: " + " <-> ".join(component))
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports, {len(cycles)} cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
