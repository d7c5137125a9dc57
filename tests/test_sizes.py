"""Sizes the code keeps to (issue 11): no module of ``ntkdist/`` over 600 lines, no function over 80 lines unless
its docstring says why with the phrase "Long because:" (a table, or a solver program whose state lives in its
local variables across the yields of its passes)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ntkdist"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
REASON = "Long because:"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE.parent))


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function over `MAX_FUNCTION_LINES` whose docstring gives no reason."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and REASON not in (ast.get_docstring(node) or ""):
                found.append((node.name, node.lineno, length))
    return found


def test_the_walk_sees_the_package():
    assert len(MODULES) > 20 and any(path.name == "pipeline.py" for path in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_at_most_600_lines(path):
    lines = path.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines; split it by responsibility"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_long_functions_say_why(path):
    offenders = long_functions(path.read_text(encoding="utf-8"))
    assert not offenders, (
        f"{_name(path)}: " + ", ".join(f"{name} (line {line}, {length} lines)" for name, line, length in offenders)
        + f" over {MAX_FUNCTION_LINES} lines; extract helpers, or say why in the docstring with {REASON!r}")


def test_the_check_catches_a_long_function_and_accepts_a_reason():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert [name for name, _, _ in long_functions(f"def f():\n{body}")] == ["f"]
    assert long_functions(f'def f():\n    """{REASON} a table."""\n{body}') == []
