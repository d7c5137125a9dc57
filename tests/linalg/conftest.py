"""Shared matrices for the solver tests: depth-3 ReLU NTKs of Gaussian data and their dense spectra.

The N = 8000, d = 16 matrix is the issue's calibration case (λ_max ≈ 2.0e4, λ_min ≈ 0.42, a clustered bottom);
its dense spectrum takes about a minute on two cores, so it is computed once per session.
"""

from __future__ import annotations

import numpy as np
import pytest

from ntkdist.kernels import MLP, ntk

from .. import background

RELU3 = MLP(depth=3, activation="relu", weight_var=2.0, bias_var=0.0)


def relu_ntk(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """The depth-3 ReLU NTK (stax convention, weight_var 2) of n i.i.d. standard Gaussian points in R^dim."""
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return ntk(X, net=RELU3)


@pytest.fixture(scope="session")
def relu_ntk_2000():
    """(K, eigenvalues ascending) for N = 2000, d = 16: fast enough for every unit test."""
    K = relu_ntk(2000, 16)
    return K, np.linalg.eigvalsh(K)


@pytest.fixture(scope="session")
def relu_ntk_8000():
    """(K, eigenvalues ascending) for N = 8000, d = 16 (the issue's acceptance matrix). The eigenvalues come from
    a background process started when collection ended (`tests/background.py`)."""
    K = relu_ntk(8000, 16)
    return K, np.load(background.start_eigvalsh_8000().result(), allow_pickle=False)
