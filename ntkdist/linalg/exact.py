"""Exact eigenvalues of a symmetric matrix held in memory (small N)."""

from __future__ import annotations

import numpy as np
import scipy.linalg


def exact_eigenvalues(matrix: np.ndarray, k: int | None = None) -> np.ndarray:
    """Eigenvalues of a symmetric matrix in descending order, by LAPACK's divide and conquer (``syevd``).

    Parameters
    ----------
    matrix : (N, N) array
        Symmetric; only the lower triangle is read. float32 input is promoted to float64 first, so the
        eigenvalues are those of the stored matrix, computed in double precision.
    k : int, optional
        Keep the k largest (all when None). For k ≪ N LAPACK's ``syevr`` computes only those.

    Returns
    -------
    (k,) float64 array, λ_1 ≥ λ_2 ≥ … .
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != n:
        raise ValueError(f"matrix: expected a square 2-D array, got shape {matrix.shape}")
    if k is None or k >= n:
        values = scipy.linalg.eigh(matrix, eigvals_only=True, driver="evd", check_finite=True)
    else:
        if k < 1:
            raise ValueError(f"k: must be ≥ 1, got {k}")
        values = scipy.linalg.eigh(matrix, eigvals_only=True, driver="evr", subset_by_index=(n - k, n - 1),
                                   check_finite=True)
    return values[::-1].copy()
