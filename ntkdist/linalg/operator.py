"""The operator protocol every eigensolver takes: a symmetric N×N matrix known only through V ↦ K·V.

A dense array, a stored Gram matrix streamed panel by panel, and a pool of workers that recompute their panels
all present themselves this way, so a solver never knows where the matrix lives.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class SymmetricOperator(Protocol):
    """A symmetric linear operator on R^N."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def matmat(self, V: np.ndarray) -> np.ndarray:
        """K·V for V of shape (N, k); returns (N, k) float64."""


class DenseOperator:
    """A symmetric matrix held in memory."""

    def __init__(self, matrix: np.ndarray):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix: expected a square 2-D array, got shape {matrix.shape}")
        self.matrix = matrix

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def dtype(self) -> np.dtype:
        return self.matrix.dtype

    def matmat(self, V: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix @ V, dtype=np.float64)
