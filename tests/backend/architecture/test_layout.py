"""The house rules of the code base: no import cycle, no module past 600 lines, no citation of files outside
the repository, ``__init__`` modules that only state their public names, and the layer order of docs/design.md §2.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
BACKEND = REPO / "backend"
MAX_LINES = 600

# Bottom to top; a package may import its own modules and packages of a lower layer only.
LAYERS = [
    {"core", "wire"},
    {"body", "gaussians"},
    {"motion"},
    {"render"},
    {"reconstruct"},
    {"dynamics"},
    {"diffusion"},
    {"train"},
    {"stages"},
    {"farm"},
    {"service"},
    {"cli"},
]


def _check_imports():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "scripts" / "check_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines() if (REPO / line).is_file()]


def test_no_import_cycle():
    check = _check_imports()
    cycles = [c for c in check.strongly_connected(check.import_graph(BACKEND)) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    pkg = tmp_path / "backend"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from backend.a import y\n")
    (pkg / "a" / "y.py").write_text("from .x import f\n")
    (pkg / "z.py").write_text("import backend.a.x\n")
    check = _check_imports()
    cycles = [c for c in check.strongly_connected(check.import_graph(pkg)) if len(c) > 1]
    assert cycles == [["backend.a.x", "backend.a.y"]]


def _layer(package: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if package in names)


def test_packages_import_only_lower_layers():
    graph = _check_imports().import_graph(BACKEND)
    wrong = []
    for source, targets in graph.items():
        parts = source.split(".")
        if len(parts) < 3 and not (BACKEND / parts[-1]).is_dir():
            continue  # backend/__init__.py, backend/__main__.py: the entry points
        for target in targets:
            src_pkg, dst_pkg = parts[1], target.split(".")[1] if "." in target else None
            if dst_pkg is None or dst_pkg == src_pkg or not (BACKEND / dst_pkg).is_dir():
                continue
            if _layer(dst_pkg) >= _layer(src_pkg):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports that go up or sideways across layers (docs/design.md §2):\n" + "\n".join(wrong)


def test_every_package_has_a_layer_and_a_design_note():
    packages = sorted(p.name for p in BACKEND.iterdir() if (p / "__init__.py").is_file())
    assert packages
    for name in packages:
        _layer(name)  # StopIteration: a package docs/design.md does not place
        assert (BACKEND / name / "design.md").is_file(), f"backend/{name}/design.md is missing"


def test_no_module_over_600_lines():
    long = [f"{p.relative_to(REPO)} ({n})" for p in _tracked("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_citation_of_files_outside_the_repository():
    outside = re.compile(r"(?<![\w/])(METHOD|DESIGN|FACTS)\.md|\.\./shared/|/work/shared")
    found = [f"{p.relative_to(REPO)}:{i}" for p in _tracked("*.py", "*.md", "*.sh", "*.toml")
             if p != Path(__file__).resolve()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not found, f"citations of files outside the repository: {found}"


def test_package_inits_hold_no_logic_and_state_their_names():
    for init in sorted(BACKEND.rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        names = None
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                continue  # the docstring
            if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]:
                names = ast.literal_eval(node.value)
                continue
            if (isinstance(node, ast.Assign) and init.parent == BACKEND
                    and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]):
                continue
            pytest.fail(f"{init.relative_to(REPO)}:{node.lineno}: logic in a package __init__")
        assert names is not None, f"{init.relative_to(REPO)} has no __all__"
