"""One BLAS thread inside the engines' loops, through a controller found once (ntkdist/kernels/blas_threads.py)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import scipy.linalg  # noqa: F401  (a second BLAS, as in real runs)
from threadpoolctl import threadpool_info

from ntkdist.kernels.blas_threads import blas_controller, one_blas_thread


def blas_threads() -> list[int]:
    return [library["num_threads"] for library in threadpool_info() if library["user_api"] == "blas"]


def test_every_blas_runs_one_thread_inside_and_its_own_count_after():
    before = blas_threads()
    assert before, "no BLAS found"
    with one_blas_thread():
        assert blas_threads() == [1] * len(before)
        np.ones((64, 64)) @ np.ones((64, 64))
    assert blas_threads() == before


def test_the_libraries_are_found_again_only_after_an_import():
    first = blas_controller()
    assert blas_controller() is first
    name = next(module for module in ("colorsys", "tabnanny", "netrc", "fractions") if module not in sys.modules)
    importlib.import_module(name)
    again = blas_controller()
    assert again is not first
    assert [c.filepath for c in again.lib_controllers] == [c.filepath for c in first.lib_controllers]
