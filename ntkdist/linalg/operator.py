"""The operator protocol every eigensolver takes: a symmetric N×N matrix known only through V ↦ K·V.

A dense array (here), a stored Gram matrix streamed chunk by chunk (``ntkdist.store``), and a pool of Ray actors
that hold, stream or recompute block-row panels (``ntkdist.cluster``) all present themselves this way, so a solver
never knows where the matrix lives. Each implementation lives in the room that owns its resource; this room never
imports ray or zarr.

What a solver may ask of an operator, and what each costs at scale:

- ``matmat(V)``: one *pass* over K (N² entries read or recomputed). The expensive call; counted in ``passes``.
- ``columns(idx)``: K[:, S] for a small index set (Nyström sampling). N·|S| entries; not a pass.
- ``diagonal()``: K_ii. N entries; read once and cached by the implementations.
- ``error_bound``: a bound on ‖K_operator − K‖₂, the distance between the matrix this operator applies and the
  matrix the user asked for (0 for a float64 matrix; the storage rounding for a float32 store). Solvers add it
  to every eigenvalue error by Weyl's inequality.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import numpy as np
import scipy.sparse.linalg

#: Unit roundoff of round-to-nearest float32 (2⁻²⁴): |fl₃₂(x) − x| ≤ u·|x| for every stored entry.
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24


@runtime_checkable
class SymmetricOperator(Protocol):
    """A symmetric linear operator on R^N (see the module docstring for the cost of each call)."""

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def dtype(self) -> np.dtype:
        """The dtype the matrix is held in (products are always returned in float64)."""

    @property
    def passes(self) -> int:
        """How many ``matmat`` calls (passes over K) this operator has served."""

    @property
    def error_bound(self) -> float:
        """A bound on ‖K_operator − K‖₂ (0 for an exact float64 matrix)."""

    def matmat(self, V: np.ndarray) -> np.ndarray:
        """K·V for V of shape (N, b); returns (N, b) float64. One pass."""

    def diagonal(self) -> np.ndarray:
        """K_ii, shape (N,), float64."""

    def columns(self, index: np.ndarray) -> np.ndarray:
        """K[:, index], shape (N, len(index)), float64."""


def float32_storage_error(frobenius_norm: float) -> float:
    """Bound on ‖K₃₂ − K‖₂ for a matrix stored entry by entry in float32.

    Each stored entry satisfies |fl(K_ij) − K_ij| ≤ u·|K_ij| (u = 2⁻²⁴), so the error matrix E has
    ‖E‖₂ ≤ ‖E‖_F ≤ u·‖K‖_F. ``frobenius_norm`` is ‖K₃₂‖_F as stored; ‖K‖_F ≤ ‖K₃₂‖_F/(1 − u).
    """
    u = FLOAT32_UNIT_ROUNDOFF
    return u * float(frobenius_norm) / (1.0 - u)


#: Unit roundoff of float64 (2⁻⁵³), the precision of the sums of squares a store records.
FLOAT64_UNIT_ROUNDOFF = 2.0 ** -53
#: The largest absolute error of rounding a real to float32 below its normal range (half the smallest subnormal).
FLOAT32_UNDERFLOW_ERROR = 2.0 ** -150


def float32_storage_error_from_squares(sum_squares: float, entries: int) -> float:
    """Rigorous bound on ‖K₃₂ − K‖₂ from Σ fl(K_ij)² summed in float64 over ``entries`` stored values (docs/theory.md
    §9.3): what a float32 store records once its build is done, from the manifest's per-block sums.

    `float32_storage_error` needs ‖K₃₂‖_F; this one also accounts for how the sum of squares was computed. The
    square of a float32 number is exact in float64 (48 significant bits ≤ 53). A float64 sum of n non-negative
    terms, in any order, is within γ_{n−1} = (n−1)ε/(1 − (n−1)ε) of the true sum (Higham, *Accuracy and Stability
    of Numerical Algorithms*, 2nd ed., §4.2; ε = 2⁻⁵³); the per-block sums, their sum over the upper blocks and
    ``2·upper − diagonal`` stay within 4nε of it (for 4nε ≤ ½), so the true Σ K₃₂² ≤ ``sum_squares``/(1 − 4(n + 4)ε),
    the extra 4 covering the few roundings of this formula itself. Values below
    float32's normal range round with an absolute error up to 2⁻¹⁵⁰ instead of u·|K_ij|, adding at most
    √n·2⁻¹⁵⁰ to ‖E‖_F.

    Raises
    ------
    ValueError
        If ``entries`` is so large that 4nε > ½ (over 10¹⁵ entries), or ``sum_squares`` is negative or NaN.
    """
    n = int(entries)
    slack = 4 * (n + 4) * FLOAT64_UNIT_ROUNDOFF
    if slack > 0.5 or not sum_squares >= 0:
        raise ValueError(f"sum_squares={sum_squares!r}, entries={entries!r}: need a non-negative sum over at most "
                         f"{1 / (8 * FLOAT64_UNIT_ROUNDOFF):.3g} entries")
    frobenius = math.sqrt(float(sum_squares) / (1.0 - slack))
    return float32_storage_error(frobenius) + math.sqrt(n) * FLOAT32_UNDERFLOW_ERROR


def as_linear_operator(operator: SymmetricOperator) -> scipy.sparse.linalg.LinearOperator:
    """The operator as a `scipy.sparse.linalg.LinearOperator` (float64, symmetric), for scipy's solvers."""
    n = operator.shape[0]

    def matmat(V):
        return operator.matmat(np.asarray(V, dtype=np.float64).reshape(n, -1))

    return scipy.sparse.linalg.LinearOperator(
        (n, n), dtype=np.float64, matvec=lambda v: matmat(v)[:, 0], rmatvec=lambda v: matmat(v)[:, 0],
        matmat=matmat, rmatmat=matmat,
    )


class DenseOperator:
    """A symmetric matrix held in memory (NumPy, or CuPy on a GPU: products come back as NumPy float64).

    ``error_bound`` is 0 for float64 (the matrix *is* the one asked about) and the float32 storage bound for a
    float32 matrix (`float32_storage_error`), unless the caller knows a bound already (``error_bound``: the one a
    float32 run store recorded, so every operator of that store reports the same).
    """

    def __init__(self, matrix, *, error_bound: float | None = None):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix: expected a square 2-D array, got shape {matrix.shape}")
        if matrix.dtype not in (np.float64, np.float32):
            raise ValueError(f"matrix: expected float64 or float32, got {matrix.dtype}")
        self.matrix = matrix
        self._passes = 0
        self._diagonal: np.ndarray | None = None
        self._error_bound: float | None = None if error_bound is None else float(error_bound)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.matrix.dtype)

    @property
    def passes(self) -> int:
        return self._passes

    @property
    def error_bound(self) -> float:
        if self._error_bound is None:
            if self.dtype == np.float64:
                self._error_bound = 0.0
            else:
                # ‖K₃₂‖_F block row by block row: no float64 copy of the whole matrix.
                xp = _array_module(self.matrix)
                squares = sum(float(xp.sum(xp.square(self.matrix[start:start + 4096].astype(xp.float64))))
                              for start in range(0, self.shape[0], 4096))
                self._error_bound = float32_storage_error(squares ** 0.5)
        return self._error_bound

    def matmat(self, V: np.ndarray) -> np.ndarray:
        xp = _array_module(self.matrix)
        V = xp.asarray(V, dtype=xp.float64)
        if V.ndim != 2 or V.shape[0] != self.shape[0]:
            raise ValueError(f"V: expected shape ({self.shape[0]}, b), got {V.shape}")
        self._passes += 1
        # A float32 matrix is promoted block by block, so the product is that of the stored matrix in float64.
        out = self.matrix @ V if self.dtype == np.float64 else _promoted_product(self.matrix, V, xp)
        return _to_numpy(out)

    def diagonal(self) -> np.ndarray:
        if self._diagonal is None:
            xp = _array_module(self.matrix)
            self._diagonal = _to_numpy(xp.diagonal(self.matrix).astype(xp.float64))
        return self._diagonal

    def columns(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        xp = _array_module(self.matrix)
        return _to_numpy(self.matrix[:, xp.asarray(index)].astype(xp.float64))


def _promoted_product(matrix, V, xp, rows: int = 4096):
    out = xp.empty((matrix.shape[0], V.shape[1]), dtype=xp.float64)
    for start in range(0, matrix.shape[0], rows):
        out[start:start + rows] = matrix[start:start + rows].astype(xp.float64) @ V
    return out


def _array_module(array):
    """cupy for a CuPy array, numpy otherwise (without importing CuPy on machines that lack it)."""
    if type(array).__module__.startswith("cupy"):
        import cupy

        return cupy
    return np


def _to_numpy(array) -> np.ndarray:
    if type(array).__module__.startswith("cupy"):
        return array.get()
    return np.asarray(array, dtype=np.float64)
