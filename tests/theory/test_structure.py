"""The shape of the theory room (issue 11), checked on its source: sizes, imports, names.

* no module in ntkdist/theory is over `MAX_MODULE_LINES` lines;
* no function is over `MAX_FUNCTION_LINES` lines (signature, docstring and body) unless its docstring says why
  with the marker `LONG_MARKER` ("Long because …"), the escape hatch for data tables and the like;
* the math room does not know the store: nothing in ntkdist/theory imports ntkdist.store (or xarray, zarr, ray,
  prefect), and no string in its code (docstrings aside) names a ``theory_*`` variable of the spectrum dataset;
* no module imports a private (underscore) name from another module;
* one reader of an activation's polynomial degree.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

THEORY = Path(__file__).resolve().parents[2] / "ntkdist" / "theory"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
#: A function may be longer than MAX_FUNCTION_LINES when its docstring contains this (and says why).
LONG_MARKER = "long because"
FORBIDDEN = ("ntkdist.store", "xarray", "zarr", "ray", "prefect")
MODULES = sorted(THEORY.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(THEORY.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path):
    """(absolute module, names) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text())
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, [alias.name for alias in node.names]


def _functions(tree):
    return [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_modules_are_found():
    names = {_module_name(path) for path in MODULES}
    assert {"ntkdist.theory.compare", "ntkdist.theory.result", "ntkdist.theory.bounds",
            "ntkdist.theory.bounds.murray", "ntkdist.theory.bounds.nguyen"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(THEORY)))
def test_no_module_is_over_the_line_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines > {MAX_MODULE_LINES}: split it"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(THEORY)))
def test_no_function_is_over_the_line_limit_without_saying_why(path):
    too_long = []
    for node in _functions(ast.parse(path.read_text())):
        lines = node.end_lineno - node.lineno + 1
        docstring = (ast.get_docstring(node) or "").lower()
        if lines > MAX_FUNCTION_LINES and LONG_MARKER not in docstring:
            too_long.append(f"{node.name} ({lines} lines)")
    assert not too_long, f"{path.name}: over {MAX_FUNCTION_LINES} lines: {too_long}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(THEORY)))
def test_theory_imports_neither_the_store_nor_the_machinery(path):
    for module, _ in _imported_modules(path):
        for forbidden in FORBIDDEN:
            assert module != forbidden and not module.startswith(forbidden + "."), (
                f"{path.name} imports {module}: the math room must not know {forbidden}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(THEORY)))
def test_theory_names_no_stored_variable(path):
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in [tree, *ast.walk(tree)]:
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    named = [node.value for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
             and re.search(r"\btheory_\w", node.value)]
    assert not named, f"{path.name} names stored variables {named}: that is ntkdist.store.theory_variables' job"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(THEORY)))
def test_no_private_name_is_imported_across_modules(path):
    private = [(module, name) for module, names in _imported_modules(path) for name in names
               if name.startswith("_") and not name.startswith("__")]
    assert not private, f"{path.name} imports private names {private}: give them a public name in one place"


def test_one_reader_of_the_polynomial_degree():
    readers = []
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for function in _functions(tree):
            reads = [node for node in ast.walk(function)
                     if (isinstance(node, ast.Attribute) and node.attr == "polynomial_degree")
                     or (isinstance(node, ast.Constant) and node.value == "polynomial_degree"
                         and any(isinstance(call, ast.Call) and getattr(call.func, "id", "") == "getattr"
                                 and node in call.args for call in ast.walk(function)))]
            if reads:
                readers.append(f"{path.name}:{function.name}")
    assert readers == ["hermite.py:activation_polynomial_degree"], readers
