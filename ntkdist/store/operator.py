"""The stored Gram matrix as a `ntkdist.linalg.SymmetricOperator`, streamed block-row panel by panel.

`StoredGramOperator` runs in the calling process (the driver) and never holds the whole matrix: a product reads
one panel of ``rows_per_read`` rows × N columns at a time (whole chunks when ``rows_per_read`` is a multiple of the
store's block, the default), promotes it to float64 and multiplies it by the matching rows of the result. Its
memory is one panel (plus its float64 copy for a float32 store) and the N×b arrays of the product.

For products served by a pool of actors that hold, stream or recompute panels, see
``ntkdist.cluster.RayGramOperator``; this one is for a single process (tests, small N, downstream readers).
"""

from __future__ import annotations

import numpy as np

from ..errors import StoreError
from ..linalg.operator import float32_storage_error
from .run_store import RunStore


class StoredGramOperator:
    """K·V streamed from a run store's ``gram`` array (see the module docstring).

    Parameters
    ----------
    store : RunStore
        A store whose build is complete (every upper block recorded in the manifest).
    rows_per_read : int, optional
        Rows of one panel read (default: the store's block, i.e. one chunk row). Memory is
        ``rows_per_read × N`` stored values plus their float64 copy.

    Notes
    -----
    ``error_bound`` is 0 for a float64 store. For a float32 store it is the bound the store recorded at the end
    of its build (`RunStore.record_gram_error_bound`, from the manifest's sums of squares). A store without one
    (built before the bound was recorded) gets `float32_storage_error` of ‖K₃₂‖_F, gathered with the diagonal
    during the first product's streamed read; if ``error_bound`` is asked for before any product, one read pass
    computes it, counted in ``read_passes``, not in ``passes`` (which counts products only).

    Raises
    ------
    StoreError
        If the store's Gram matrix is incomplete (unwritten chunks read as NaN).
    """

    def __init__(self, store: RunStore, *, rows_per_read: int | None = None):
        missing = store.missing_blocks()
        if missing:
            raise StoreError(
                f"{store.location}: the Gram matrix is incomplete ({len(missing)} of {len(store.upper_blocks())} "
                "blocks missing); finish the build (re-run the same configuration) before solving from the store")
        rows = store.block if rows_per_read is None else int(rows_per_read)
        if rows < 1:
            raise ValueError(f"rows_per_read: must be ≥ 1, got {rows_per_read!r}")
        self.store = store
        self.rows_per_read = rows
        self._gram = store.gram
        self._n = store.n
        self._passes = 0
        self.read_passes = 0
        self._sum_squares: float | None = None
        self._diagonal: np.ndarray | None = None
        self._recorded_bound = store.gram_error_bound

    # -- protocol ----------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._n, self._n)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._gram.dtype)

    @property
    def passes(self) -> int:
        return self._passes

    @property
    def frobenius_norm(self) -> float:
        """‖K‖_F of the matrix as stored (from the first product's read, or one read pass now)."""
        if self._sum_squares is None:
            self._stream(None)
            self.read_passes += 1
        return float(np.sqrt(self._sum_squares))

    @property
    def error_bound(self) -> float:
        if self.dtype == np.float64:
            return 0.0
        if self._recorded_bound is not None:
            return self._recorded_bound
        return float32_storage_error(self.frobenius_norm)

    def matmat(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, dtype=np.float64)
        if V.ndim != 2 or V.shape[0] != self._n:
            raise ValueError(f"V: expected shape ({self._n}, b), got {V.shape}")
        out = self._stream(V)
        self._passes += 1
        return out

    def diagonal(self) -> np.ndarray:
        """K_ii as float64: from the first product's read, else from the diagonal chunks alone (N·block values)."""
        if self._diagonal is None:
            self._diagonal = self.store.diagonal()
        return self._diagonal

    def columns(self, index: np.ndarray) -> np.ndarray:
        """K[:, index] as float64. Reads only the chunk columns that hold a requested column (a chunk is the
        smallest unit a zarr store can read), each once however often its columns are requested."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self._n):
            raise IndexError(f"index: columns must lie in [0, {self._n}), got range [{index.min()}, {index.max()}]")
        unique, inverse = np.unique(index, return_inverse=True)
        if unique.size == 0:
            return np.empty((self._n, 0))
        values = self._gram.get_orthogonal_selection((slice(None), unique))
        return np.asarray(values, dtype=np.float64)[:, inverse]

    # -- streaming ---------------------------------------------------------------------------------------------
    def _stream(self, V: np.ndarray | None) -> np.ndarray | None:
        """One read of K, panel by panel: K·V when V is given; ‖K‖_F² and the diagonal if not known yet."""
        gather = self._sum_squares is None
        out = None if V is None else np.empty((self._n, V.shape[1]))
        sum_squares = 0.0
        diagonal = np.empty(self._n) if self._diagonal is None and gather else None
        for start in range(0, self._n, self.rows_per_read):
            stop = min(start + self.rows_per_read, self._n)
            panel = np.asarray(self._gram[start:stop, :], dtype=np.float64)  # float32 promoted per panel
            if out is not None:
                out[start:stop] = panel @ V
            if gather:
                flat = panel.reshape(-1)
                sum_squares += float(flat @ flat)
                if diagonal is not None:
                    diagonal[start:stop] = np.diagonal(panel[:, start:stop])
        if gather:
            self._sum_squares = sum_squares
            if diagonal is not None:
                self._diagonal = diagonal
        return out

    def __repr__(self) -> str:
        return (f"StoredGramOperator({self.store.location}, N={self._n}, dtype={self.dtype}, "
                f"rows_per_read={self.rows_per_read}, passes={self._passes})")
