"""The actor side of `ntkdist.cluster.operator.RayGramOperator`: `GramPanelWorker` owns block-row panels of the
Gram matrix and adds its share of K·V into an accumulator of its own, in the three modes (memory, stored,
matrix_free) and with the fixed summation order that the operator's module docstring describes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np

from ..kernels import MLP, TILE, gram_block
from ..kernels._xp import to_numpy
from ..kernels.blas_threads import one_blas_thread
from ..store import RunStore
from .builder import _choose_array_module


def panel_slices(n: int, block: int) -> list[slice]:
    """The block-row panels of an N×N matrix: rows [I·block, (I+1)·block), the last one shorter."""
    return [slice(start, min(start + block, n)) for start in range(0, n, block)]


class GramPanelWorker:
    """One actor of a `RayGramOperator`: owns fixed panels (memory/stored) and runs matrix-free panel jobs.

    Runs as a Ray actor; a plain class for in-process use.
    """

    def __init__(self, *, n: int, block: int, panels: list[int], mode: str, store_location: str | None, use_gram: bool,
                 X, net: MLP | None, kind: str, device: str, threads: int, memory_budget: int):
        self._xp, self._device_note = _choose_array_module(device)
        self._threads = 1 if self._xp is not np else max(1, int(threads))
        self._n = n
        self._slices = panel_slices(n, block)
        self._panels = list(panels)
        self._net, self._kind = net, kind
        self._store = RunStore.open(store_location) if store_location else None
        self._gram = self._store.gram if use_gram else None
        self._X = None
        if self._gram is None:
            X = self._store.inputs[:] if X is None else X
            self._X = self._xp.asarray(np.asarray(X, dtype=np.float64))
        self.requested_mode = mode
        self.mode = mode
        self.reason = ""
        self._held: dict[int, object] = {}
        self._V = self._accumulator = None  # a pass's block and this actor's share of K·V (begin … end_pass)
        self._sum_squares: dict[int, float] | None = None
        if mode == "memory":
            itemsize = np.dtype(self._gram.dtype).itemsize if self._gram is not None else 8
            need = sum((self._slices[i].stop - self._slices[i].start) * n * itemsize for i in self._panels)
            if need <= memory_budget:
                self._load_panels()
            else:
                self.mode = "stored" if self._gram is not None else "matrix_free"
                self.reason = (f"panels need {need} bytes > memory_budget {memory_budget}; "
                               f"{'streaming them from the store' if self._gram is not None else 'recomputing them'}"
                               " every pass")

    # -- description -------------------------------------------------------------------------------------------
    def describe(self) -> dict:
        gpu_ids = []
        try:
            import ray

            if ray.is_initialized():
                gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        except ImportError:  # pragma: no cover
            pass
        return {"pid": os.getpid(), "gpu_ids": gpu_ids, "array_module": self._xp.__name__,
                "note": self._device_note, "threads": self._threads, "mode": self.mode, "reason": self.reason,
                "panels": self._panels}

    # -- blocks ------------------------------------------------------------------------------------------------
    def _blas(self):
        if self._xp is not np:
            return nullcontext()
        return one_blas_thread()

    def _map(self, fn, items):
        """``map`` in order; over a thread pool when this actor has several CPUs (BLAS stays single-threaded)."""
        items = list(items)
        if self._threads <= 1 or len(items) <= 1:
            return map(fn, items)
        pool = ThreadPoolExecutor(min(self._threads, len(items)))
        results = pool.map(fn, items)
        pool.shutdown(wait=False)
        return results

    def _kernel(self, rows, cols=None):
        return gram_block(rows, cols, net=self._net, kind=self._kind, threads=1)

    def _upper_block(self, i: int, j: int):
        """K_IJ for I ≤ J recomputed from X, exactly as the build computes (and stores) it."""
        rows = self._X[self._slices[i]]
        return self._kernel(rows) if i == j else self._kernel(rows, self._X[self._slices[j]])

    def _block(self, i: int, j: int):
        """K_IJ (any I, J) in its held or stored dtype, on this actor's device."""
        if i in self._held:
            return self._held[i][:, self._slices[j]]
        if self._gram is not None:
            return self._xp.asarray(self._gram[self._slices[i], self._slices[j]])
        return self._upper_block(i, j) if i <= j else self._upper_block(j, i).T

    def _load_panels(self) -> None:
        sums = {}
        with self._blas():
            for i in self._panels:
                if self._gram is not None:
                    panel = self._xp.asarray(self._gram[self._slices[i], :])
                else:
                    panel = self._xp.concatenate([self._block(i, j) for j in range(len(self._slices))], axis=1)
                flat = panel.reshape(-1).astype(self._xp.float64)
                sums[i] = float(flat @ flat)
                self._held[i] = panel
        self._sum_squares = sums

    # -- products ----------------------------------------------------------------------------------------------
    # A pass: begin_pass(b), the block V arrives in row slabs (receive_rows), product() or the panel jobs add
    # into this actor's N×b accumulator, the driver reads it back in slabs (accumulated), end_pass frees both.
    def begin_pass(self, b: int) -> None:
        """A pass begins: room for the block V and a zero N×b accumulator for this actor's contributions."""
        self._V = self._xp.empty((self._n, int(b)))
        self._accumulator = self._xp.zeros((self._n, int(b)))

    def receive_rows(self, start: int, rows) -> None:
        """Rows [start, start + len(rows)) of this pass's block V."""
        self._V[start:start + len(rows)] = self._xp.asarray(rows)

    def product(self) -> None:
        """Y_I = Σ_J K_IJ·V_J (increasing J) for each owned panel, into the accumulator's rows of panel I (the
        other rows stay exactly zero); memory and stored modes."""
        xp = self._xp
        V = self._V
        gather = self._sum_squares is None
        sums = {}
        with self._blas():
            for i in self._panels:
                def piece(j, i=i):
                    block = self._block(i, j).astype(xp.float64, copy=False)
                    ss = float(block.reshape(-1) @ block.reshape(-1)) if gather else 0.0
                    return block @ V[self._slices[j]], ss
                acc, total = None, 0.0
                for value, ss in self._map(piece, range(len(self._slices))):
                    if acc is None:
                        acc = value
                    else:
                        acc += value  # increasing J: the fixed order of every panel's sum
                    total += ss
                sums[i] = total
                self._accumulator[self._slices[i]] = acc
        if gather:
            self._sum_squares = sums

    def panel_job(self, i: int) -> None:
        """Matrix-free job of panel I (module docstring): adds R_I = Σ_{J ≥ I} K_IJ·V_J (increasing J) into the
        accumulator's rows of panel I and K_IJᵀ·V_I into its rows of panel J > I. Distinct J write distinct rows,
        so the thread pool's pieces never touch the same rows."""
        V = self._V
        rows = self._slices[i]
        accumulator = self._accumulator

        def piece(j):
            block = self._upper_block(i, j)
            own = block @ V[self._slices[j]]
            if j != i:
                accumulator[self._slices[j]] += block.T @ V[rows]
            return own

        with self._blas():
            R = None
            for value in self._map(piece, range(i, len(self._slices))):
                if R is None:
                    R = value
                else:
                    R += value  # increasing J
        accumulator[rows] += R

    def accumulated(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of this pass's accumulator (float64, host memory)."""
        return to_numpy(self._accumulator[start:stop])

    def end_pass(self) -> None:
        self._V = self._accumulator = None

    def sum_squares(self) -> tuple[dict[int, float], bool]:
        """Σ K² of each owned panel as held/stored, and whether finding it took a read of the panels (it does not
        after a memory load or a first product)."""
        read = self._sum_squares is None
        if read:
            with self._blas():
                sums = {}
                for i in self._panels:
                    total = 0.0
                    for j in range(len(self._slices)):
                        flat = self._block(i, j).astype(self._xp.float64).reshape(-1)
                        total += float(flat @ flat)
                    sums[i] = total
            self._sum_squares = sums
        return self._sum_squares, read

    # -- diagonal and columns ----------------------------------------------------------------------------------
    def diagonal(self) -> list[tuple[int, np.ndarray]]:
        """K_ii of each owned panel, float64. From X: the diagonal of gram_block on TILE rows at a time (the same
        arithmetic as the diagonal blocks of a product, N·TILE entries in all)."""
        out = []
        for i in self._panels:
            rows = self._slices[i]
            if self._gram is not None or i in self._held:
                out.append((i, to_numpy(self._xp.diagonal(self._block(i, i))).astype(np.float64)))
                continue
            values = np.empty(rows.stop - rows.start)
            for start in range(rows.start, rows.stop, TILE):
                stop = min(start + TILE, rows.stop)
                values[start - rows.start:stop - rows.start] = to_numpy(
                    self._xp.diagonal(self._kernel(self._X[start:stop])))
            out.append((i, values))
        return out

    def columns(self, unique: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """K[rows of each owned panel, unique] as float64 (``unique`` sorted, without repeats)."""
        xp = self._xp
        out = []
        for i in self._panels:
            rows = self._slices[i]
            if i in self._held:
                out.append((i, to_numpy(self._held[i][:, xp.asarray(unique)].astype(xp.float64))))
            elif self._gram is not None:
                out.append((i, np.asarray(self._gram.get_orthogonal_selection((rows, unique)), dtype=np.float64)))
            else:
                out.append((i, self._columns_from_inputs(rows, unique)))
        return out

    def _columns_from_inputs(self, rows: slice, unique: np.ndarray) -> np.ndarray:
        """K[rows, S] with each pair computed with its lower index as the row, as the products compute it."""
        xp, X = self._xp, self._X
        out = np.empty((rows.stop - rows.start, unique.size))
        after = unique >= rows.stop
        before = unique < rows.start
        if after.any():
            out[:, after] = to_numpy(self._kernel(X[rows], X[xp.asarray(unique[after])]))
        if before.any():
            out[:, before] = to_numpy(self._kernel(X[xp.asarray(unique[before])], X[rows])).T
        for k in np.flatnonzero(~(after | before)):
            s = int(unique[k])
            local = s - rows.start
            column = out[:, k]
            if local > 0:
                column[:local] = to_numpy(self._kernel(X[rows.start:s], X[s:s + 1]))[:, 0]
            column[local] = to_numpy(self._kernel(X[s:s + 1]))[0, 0]
            if s + 1 < rows.stop:
                column[local + 1:] = to_numpy(self._kernel(X[s:s + 1], X[s + 1:rows.stop]))[0]
        return out
