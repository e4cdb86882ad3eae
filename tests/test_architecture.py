"""The package tree is the architecture: rules the import contracts (pyproject.toml,
``lint-imports`` in ``make lint``) cannot express, checked on the source text with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("online_cnmfe", "acquisition", "dashboard")
KERNEL_IMPORTS = {"numpy", "numba", "math", "__future__"}
MAX_MODULE_LINES = 500


def _modules(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py"))


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: str(p.relative_to(REPO)))
def test_no_dynamic_import(path):
    """Dependencies are visible: no importlib.import_module / __import__ in the project."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "import_module":
            pytest.fail(f"{path.relative_to(REPO)}:{node.lineno} calls import_module")
        if isinstance(node, ast.Name) and node.id == "__import__":
            pytest.fail(f"{path.relative_to(REPO)}:{node.lineno} calls __import__")


def test_kernels_import_only_numpy_numba_math():
    """Numerical kernels are pure functions on arrays (STYLE.md)."""
    kernels = _modules("online_cnmfe/model/_kernels") + [REPO / "online_cnmfe/triggers/_kernels.py"]
    assert len(kernels) > 5
    for path in kernels:
        for name in _imported_modules(ast.parse(path.read_text())):
            top = name.split(".")[0]
            inside = name.startswith("online_cnmfe.model._kernels")
            assert top in KERNEL_IMPORTS or inside, f"{path.relative_to(REPO)} imports {name}"


def test_modules_stay_small():
    """A module has one job: at most 500 lines (STYLE.md aims at ~400)."""
    long = {
        str(p.relative_to(REPO)): n
        for p in _modules(*PACKAGES)
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines, split them by job: {long}"


def test_at_most_ten_modules_at_the_top_of_the_package():
    top = sorted(p.name for p in (REPO / "online_cnmfe").glob("*.py"))
    assert len(top) <= 10, top
