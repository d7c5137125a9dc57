"""The rooms of the code import only what docs/architecture.md lets them (read with `ast`, nothing is imported).

Rules, from the table in docs/architecture.md ("imports point down this table, never up"):

- the math rooms (``ntkdist/kernels``, ``ntkdist/theory``, ``ntkdist/linalg``) never import ray, prefect, zarr,
  xarray or dask, so they can be read, tested and reused alone;
- ``ntkdist/store`` never imports ``ntkdist.cluster`` (``cluster`` is the only room that knows about workers);
- no room imports a room listed below it (`ALLOWED`). ``ntkdist.errors`` imports nothing and every room may raise
  its errors.

Every import counts, also those inside functions (the lazy ``import ray`` of a math room would still tie it to Ray).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MATH_ROOMS = ("kernels", "theory", "linalg")
#: Packages a math room must never import.
MATH_FORBIDDEN = ("ray", "prefect", "zarr", "xarray", "dask")

_BELOW_PIPELINE = {"kernels", "linalg", "theory", "store", "cluster", "datasets", "errors", "figures", "config",
                   "activations"}
#: The ntkdist rooms each room may import (besides itself), from docs/architecture.md's table.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "kernels": {"errors"},
    "linalg": {"errors"},
    "theory": {"kernels", "linalg", "errors"},
    "store": {"linalg", "errors"},
    "cluster": {"kernels", "linalg", "theory", "store", "errors"},
    "datasets": {"errors"},
    "figures": {"errors"},
    "config": {"kernels", "errors"},
    "activations": {"kernels"},  # ntkdist.activations: the public constructors of kernels' activations
    "pipeline": _BELOW_PIPELINE,
    "studies": _BELOW_PIPELINE,
    "cli": _BELOW_PIPELINE | {"pipeline", "studies", "flows"},
    "flows": _BELOW_PIPELINE | {"pipeline", "studies"},
    "__init__": _BELOW_PIPELINE | {"pipeline"},  # the package's public names
}


# -- the checker ---------------------------------------------------------------------------------------------------
def room_of(module: str) -> str:
    """'ntkdist.kernels.gram' → 'kernels'; 'ntkdist.pipeline' → 'pipeline'; 'ntkdist' → '__init__';
    'flows.spectrum' → 'flows'."""
    parts = module.split(".")
    if parts[0] == "flows":
        return "flows"
    return parts[1] if len(parts) > 1 else "__init__"


def imported_modules(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, relative imports resolved against ``module``."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "ntkdist":  # from ntkdist import store → the room itself
                found.extend((node.lineno, f"ntkdist.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, name))
    return found


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What in ``source`` (the text of ``module``) breaks the layering rules, one line each."""
    room = room_of(module)
    problems = []
    for line, name in imported_modules(source, module, is_package=is_package):
        top = name.split(".")[0]
        where = f"{module}:{line} imports {name}"
        if room in MATH_ROOMS and top in MATH_FORBIDDEN:
            problems.append(f"{where}: the math room {room} never imports {', '.join(MATH_FORBIDDEN)}")
            continue
        if top == "flows":
            target = "flows"
        elif top == "ntkdist":
            target = room_of(name)
        else:
            continue
        if target == room:
            continue
        if room == "store" and target == "cluster":
            problems.append(f"{where}: store never imports cluster")
        elif target not in ALLOWED.get(room, set()):
            problems.append(f"{where}: {room} may import only {sorted(ALLOWED.get(room, set())) or 'no room'} "
                            "(docs/architecture.md)")
    return problems


def project_modules():
    """(module name, path, is_package) of every Python file of ntkdist/ and flows/."""
    for top in ("ntkdist", "flows"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            yield ".".join(parts), path, is_package


# -- the code obeys ------------------------------------------------------------------------------------------------
def test_every_room_imports_only_what_the_architecture_allows():
    modules = list(project_modules())
    assert len(modules) > 30 and {room_of(m) for m, _, _ in modules} >= set(MATH_ROOMS) | {"store", "cluster"}
    unknown = {room_of(m) for m, _, _ in modules} - set(ALLOWED)
    assert not unknown, f"rooms missing from ALLOWED (add them with docs/architecture.md): {unknown}"
    problems = [p for module, path, is_package in modules
                for p in violations(path.read_text(), module, is_package=is_package)]
    assert not problems, "\n".join(problems)


# -- the checker can fail ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module, source, needle", [
    ("ntkdist.kernels.gram", "import numpy as np\nimport ray\n", "math room kernels never imports"),
    ("ntkdist.theory.bounds", "def f():\n    import zarr.storage\n", "math room theory never imports"),
    ("ntkdist.linalg.krylov", "from xarray import Dataset\n", "math room linalg never imports"),
    ("ntkdist.linalg.krylov", "from prefect import task\n", "math room linalg never imports"),
    ("ntkdist.store.run_store", "from ..cluster import build_gram\n", "store never imports cluster"),
    ("ntkdist.store.run_store", "from ntkdist import cluster\n", "store never imports cluster"),
    ("ntkdist.kernels.gram", "from ..theory import power_series\n", "kernels may import only"),
    ("ntkdist.theory.compare", "from ntkdist.pipeline import solve\n", "theory may import only"),
    ("ntkdist.config", "from .store import RunStore\n", "config may import only"),
    ("ntkdist.pipeline", "from flows.spectrum import spectrum_flow\n", "pipeline may import only"),
])
def test_the_checker_finds_each_kind_of_violation(module, source, needle):
    found = violations(source, module)
    assert len(found) == 1 and needle in found[0], found


def test_the_checker_accepts_imports_within_and_below_a_room():
    assert violations("from .hermite import x\nfrom ..kernels import MLP\nfrom ..linalg import DenseOperator\n"
                      "import numpy\n", "ntkdist.theory.compare") == []
    assert violations("from .operator import RayGramOperator\n", "ntkdist.cluster", is_package=True) == []
    assert imported_modules("from .builder import x\n", "ntkdist.cluster", is_package=True) == [
        (1, "ntkdist.cluster.builder")]
    assert imported_modules("from .. import errors\n", "ntkdist.store.run_store") == [(1, "ntkdist.errors")]
