"""The Gram matrix as a `ntkdist.linalg.SymmetricOperator` served by a pool of Ray actors.

The matrix is cut into block-row *panels* of ``block`` rows (the store's block by default). The panel layout
depends on ``block`` and N only, never on the number of actors.

Three ways to serve a pass
--------------------------
``"memory"``
    Each actor owns a fixed set of panels (round robin) and holds them in memory (stored dtype) when they fit its
    ``memory_budget``. The panels come from the store's ``gram``, or, with no stored Gram, are computed once from
    the inputs. Over budget it falls back to ``"stored"`` (or ``"matrix_free"`` without a store), and records why.
``"stored"``
    Each actor streams its panels from the zarr store on every pass, one chunk (block × block) at a time.
``"matrix_free"``
    Nothing of K is kept: every pass recomputes it from the inputs X with the fused engine
    (`ntkdist.kernels.gram_block`). The inputs come from a run store's ``inputs`` or from an X array put in Ray's
    object store, so no Gram store is needed at all.

Arithmetic of one pass
----------------------
The driver sends V to every actor in row slabs of `SLAB_ROWS` (each slab put once in Ray's object store, read by
all actors, freed before the next), each actor adds its share of K·V into an N×b accumulator of its own, and the
driver reads the accumulators back slab by slab, adding them in actor order. So the driver maps two slabs of the
object store at a time, never a whole N×b block; its own memory holds V and Y.

memory / stored: panel I computes Y_I = Σ_J K_IJ·V_J, one GEMM of shape (rows_I × cols_J)·(cols_J × b) per
block, summed in increasing J, into the rows of panel I of its owner's accumulator; every other actor's rows
there are exactly zero. So one actor and four actors return bit-identical products (given the same kind of
device).

matrix_free exploits symmetry: the *job* of panel I computes the upper blocks K_IJ, J ≥ I, only (half the
kernel entries of a full pass) and uses each block twice:

    A[I] += K_II·V_I + K_I,I+1·V_I+1 + … (increasing J)      rows of panel I
    A[J] += K_IJᵀ·V_I for J > I                               rows below panel I

Returned per job, the transposed half would be (N/block)/2 arrays of up to N×b per pass through the object
store (2 GB at N = 10⁵, b = 200, block = 4096), every one mapped into the driver's resident memory.

The jobs are dealt to the actors statically, in the order of their size, snaking (actor 0, 1, …, a−1, a−1, …,
0, …), which balances the triangular work to within one job; each actor runs its jobs in that fixed order. So a
fixed number of actors gives bit-identical products run after run; a different number of actors sums the
transposed contributions in another order and agrees to rounding (≈ 1e-16 relative), which the eigenvalues
inherit.

Within an actor, BLAS runs single-threaded and the actor's CPUs work on different blocks (a thread pool over J;
results summed in J order), so the arithmetic of a block does not depend on how many CPUs an actor was given.
On a GPU (an actor with ``num_gpus=1`` and CuPy, chosen as the builder does) blocks run one after another on the
device, and float64 GEMMs never use TF32.

This module is the driver side (`RayGramOperator`); the actor class is `ntkdist.cluster.panel_worker`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ..kernels import MLP
from ..linalg.operator import float32_storage_error
from ..store import RunStore
from .builder import resources_per_worker
from .panel_worker import GramPanelWorker, panel_slices
from .runtime import get, release_object_store_pages

log = logging.getLogger("ntkdist.cluster")

MODES = ("memory", "stored", "matrix_free")
#: Panel rows of a matrix-free operator without a store (a multiple of the kernel's TILE).
DEFAULT_BLOCK = 2048
#: Bytes of panels one actor may hold in ``"memory"`` mode unless told otherwise.
DEFAULT_MEMORY_BUDGET = 4 * 2**30
#: Rows of V sent, and of an actor's accumulator fetched, at a time (about 20 MB at b = 300): the driver maps
#: slabs of Ray's object store, never a whole N×b block.
SLAB_ROWS = 8192


def snake_deal(jobs: int, workers: int) -> list[list[int]]:
    """Jobs 0, 1, …, jobs−1 (decreasing size) dealt to ``workers`` in rounds that go forward then backward:
    each actor's total is within one job of the others' for sizes that decrease steadily."""
    dealt: list[list[int]] = [[] for _ in range(workers)]
    for start in range(0, jobs, workers):
        order = range(workers) if (start // workers) % 2 == 0 else range(workers - 1, -1, -1)
        for actor, job in zip(order, range(start, min(start + workers, jobs))):
            dealt[actor].append(job)
    return dealt


class RayGramOperator:
    """K·V served by a pool of Ray actors that hold, stream or recompute block-row panels (module docstring).

    Parameters
    ----------
    store : path or RunStore, optional
        A run store: its complete ``gram`` (memory, stored) or its ``inputs`` (matrix_free).
    X : (N, d) array or ray.ObjectRef, optional
        Inputs for a matrix-free operator without a store (an array is put in Ray's object store once).
    net : MLP, kind : {"ntk", "nngp"}
        The kernel; required when K is computed from inputs.
    mode : {"memory", "stored", "matrix_free"}
        With a store and no X, memory and stored use the store's Gram (it must be complete); with X, memory
        computes the panels once from X. matrix_free uses X, else the store's inputs.
    block : int, optional
        Panel rows (default: the store's block; `DEFAULT_BLOCK` without one). Memory and stored products are
        bit-identical for any number of actors at a fixed ``block``; matrix-free ones for a fixed number, and
        equal to rounding across numbers (module docstring).
    workers : int
        Actors (one per GPU on a GPU cluster).
    device, cpus_per_worker
        As for `build_gram` (`resources_per_worker` decides each actor's request).
    memory_budget : int
        Bytes of panels one actor may hold in memory mode.

    Attributes
    ----------
    mode : str
        The mode actually served ("mixed" if only some actors fell back); ``requested_mode`` is the one asked.
    fallback_reasons : list of str
        Why actors did not hold their panels (memory budget).
    workers : list of dict
        Each actor's pid, device, threads, mode and panels.
    pass_seconds : list of float
        Wall time of each product. ``read_passes`` counts reads of K that were not products (the Frobenius
        norm of a float32 store asked for before any product).

    Ray must already be initialised (`ray_session`). Close the operator (or use it as a context manager) to
    kill its actors.
    """

    def __init__(self, store=None, *, X=None, net: MLP | None = None, kind: str = "ntk", mode: str = "memory",
                 block: int | None = None, workers: int = 1, device: str = "auto",
                 cpus_per_worker: float | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        import ray

        if mode not in MODES:
            raise ValueError(f"mode: must be one of {', '.join(MODES)}, got {mode!r}")
        if store is not None and not isinstance(store, RunStore):
            store = RunStore.open(store)
        self.store = store
        # K comes from the store's Gram (memory, stored) or from the inputs: X, else the store's inputs.
        use_gram = store is not None and X is None and mode != "matrix_free"
        if not use_gram and kind not in ("ntk", "nngp"):
            raise ValueError(f"kind: recomputing K from the inputs needs \"ntk\" or \"nngp\", got {kind!r}; "
                             "the empirical kinds are multiplied from their stored Gram matrix")
        if mode == "stored" and not use_gram:
            raise ValueError("mode: \"stored\" needs a run store with its Gram matrix (store=…, no X)")
        X_ref = None
        if use_gram:
            missing = store.missing_blocks()
            if missing:
                raise ValueError(f"store: the Gram matrix of {store.location} is incomplete ({len(missing)} blocks "
                                 "missing); finish the build, or use mode=\"matrix_free\"")
            n = store.n
            self._dtype = np.dtype(store.gram.dtype)
        else:
            if net is None:
                raise ValueError("net: needed to compute K from the inputs (matrix_free, or memory without a store)")
            if X is None and store is None:
                raise ValueError("X: give the inputs (an array or an ObjectRef), or a store that holds them")
            if X is None:
                n = store.n
            elif isinstance(X, ray.ObjectRef):
                X_ref, n = X, _rows_of(X)
            else:
                X = np.asarray(X, dtype=np.float64)
                if X.ndim != 2:
                    raise ValueError(f"X: expected a 2-D array (points × features), got shape {X.shape}")
                X_ref, n = ray.put(X), X.shape[0]
            self._dtype = np.dtype(np.float64)
        block = int(block) if block is not None else (store.block if store is not None else DEFAULT_BLOCK)
        if block < 1:
            raise ValueError(f"block: must be ≥ 1, got {block}")
        self._n, self.block, self.kind, self.net = n, block, kind, net
        self._slices = panel_slices(n, block)
        nb = len(self._slices)
        workers = max(1, min(int(workers), nb))
        resources = resources_per_worker(device, workers, cpus_per_worker)
        threads = max(1, int(resources["num_cpus"]))
        Actor = ray.remote(GramPanelWorker)
        #: Panels owned by each actor (memory/stored products, diagonal, columns): round robin over panels.
        self.panels_of = [list(range(a, nb, workers)) for a in range(workers)]
        #: Matrix-free jobs dealt to each actor, largest first, snaking (module docstring).
        self.jobs_of = snake_deal(nb, workers)
        self._actors = [
            Actor.options(**resources).remote(
                n=n, block=block, panels=panels, mode=mode, store_location=None if store is None else store.location,
                use_gram=use_gram, X=X_ref, net=net, kind=kind, device=device, threads=threads,
                memory_budget=int(memory_budget))
            for panels in self.panels_of
        ]
        self.requested_mode = mode
        self.workers = get([a.describe.remote() for a in self._actors])
        modes = {w["mode"] for w in self.workers}
        #: The mode actually used (memory falls back when its panels do not fit the budget).
        self.mode = modes.pop() if len(modes) == 1 else "mixed"
        self.fallback_reasons = [w["reason"] for w in self.workers if w["reason"]]
        for reason in self.fallback_reasons:
            log.info("RayGramOperator: %s", reason)
        self._passes = 0
        self.read_passes = 0
        self.pass_seconds: list[float] = []
        self._sum_squares: float | None = None
        self._diagonal: np.ndarray | None = None
        # A float32 store records its bound when its build ends: no pass gathers ‖K₃₂‖_F then.
        self._recorded_bound = store.gram_error_bound if use_gram else None

    # -- protocol ----------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._n, self._n)

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def passes(self) -> int:
        return self._passes

    @property
    def error_bound(self) -> float:
        """0 for float64 (a float64 store, or K recomputed in float64); `float32_storage_error` of ‖K₃₂‖_F for a
        float32 store: the bound the store recorded at the end of its build (`RunStore.record_gram_error_bound`),
        else from ‖K₃₂‖_F (the memory load or the first product; else one read pass, in read_passes)."""
        if self._dtype == np.float64:
            return 0.0
        if self._recorded_bound is not None:
            return self._recorded_bound
        return float32_storage_error(self.frobenius_norm)

    @property
    def frobenius_norm(self) -> float:
        if self._sum_squares is None:
            self._check_open()
            self._sum_squares = self._fold_sums(get([a.sum_squares.remote() for a in self._actors]))
        return float(np.sqrt(self._sum_squares))

    def matmat(self, V: np.ndarray) -> np.ndarray:
        self._check_open()
        V = np.asarray(V, dtype=np.float64)
        if V.ndim != 2 or V.shape[0] != self._n:
            raise ValueError(f"V: expected shape ({self._n}, b), got {V.shape}")
        start = time.perf_counter()
        b = V.shape[1]
        actors = self._actors
        get([actor.begin_pass.remote(b) for actor in actors])
        try:
            self._send_rows(V)
            if self.mode == "matrix_free":
                get([actor.panel_job.remote(i) for actor, jobs in zip(actors, self.jobs_of) for i in jobs])
            else:
                get([actor.product.remote() for actor in actors])
                if self._sum_squares is None and self._dtype != np.float64 and self._recorded_bound is None:
                    self._sum_squares = self._fold_sums(get([a.sum_squares.remote() for a in actors]))
            out = self._gather_rows(b)
        finally:
            get([actor.end_pass.remote() for actor in actors])
        self._passes += 1
        self.pass_seconds.append(time.perf_counter() - start)
        return out

    def diagonal(self) -> np.ndarray:
        if self._diagonal is None:
            self._check_open()
            out = np.empty(self._n)
            for parts in get([a.diagonal.remote() for a in self._actors]):
                for i, values in parts:
                    out[self._slices[i]] = values
            self._diagonal = out
        return self._diagonal

    def columns(self, index: np.ndarray) -> np.ndarray:
        """K[:, index] as float64 (each actor its panels' rows). Not a pass: N·|index| entries."""
        self._check_open()
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self._n):
            raise IndexError(f"index: columns must lie in [0, {self._n}), got range [{index.min()}, {index.max()}]")
        unique, inverse = np.unique(index, return_inverse=True)
        out = np.empty((self._n, unique.size))
        if unique.size:
            for parts in get([a.columns.remote(unique) for a in self._actors]):
                for i, values in parts:
                    out[self._slices[i]] = values
        return out[:, inverse]

    # -- passes ------------------------------------------------------------------------------------------------
    def _send_rows(self, V: np.ndarray) -> None:
        """V to every actor, `SLAB_ROWS` rows at a time: each slab is put once, read by all actors, and freed
        before the next is put, so the object store reuses its memory and the driver never maps all of V."""
        import ray

        for start in range(0, self._n, SLAB_ROWS):
            ref = ray.put(np.ascontiguousarray(V[start:start + SLAB_ROWS]))
            get([actor.receive_rows.remote(start, ref) for actor in self._actors])
            del ref
            release_object_store_pages()  # the store may place the next slab elsewhere: keep one slab resident

    def _gather_rows(self, b: int) -> np.ndarray:
        """K·V = Σ_actors accumulator, slab by slab, actors in a fixed order; the next slab is asked for while this
        one is added. In memory and stored modes every row has one nonzero term (exact); matrix-free rows add
        the actors' partial sums (module docstring)."""
        Y = np.empty((self._n, b))
        actors = self._actors
        requests = [(start, position) for start in range(0, self._n, SLAB_ROWS) for position in range(len(actors))]

        def ask(request):
            start, position = request
            return actors[position].accumulated.remote(start, min(start + SLAB_ROWS, self._n))

        ahead = ask(requests[0])
        for index, (start, position) in enumerate(requests):
            ref = ahead
            if index + 1 < len(requests):
                ahead = ask(requests[index + 1])
            slab = get(ref)
            rows = slice(start, start + slab.shape[0])
            if position == 0:
                Y[rows] = slab
            else:
                Y[rows] += slab
            del slab, ref
            release_object_store_pages()
        return Y

    def _fold_sums(self, parts: list[tuple[dict, bool]]) -> float:
        sums = {}
        for part, read in parts:
            sums.update(part)
        if any(read for _, read in parts):
            self.read_passes += 1
        return float(sum(sums[i] for i in range(len(self._slices))))  # panel order: deterministic

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._actors is None:
            raise RuntimeError("RayGramOperator: closed (its actors were killed); create a new one")

    def close(self) -> None:
        """Kill the actors (their panels are freed). Idempotent."""
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
        self._actors = None

    def __enter__(self) -> "RayGramOperator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RayGramOperator(N={self._n}, mode={self.mode}, block={self.block}, "
                f"workers={len(self.panels_of)}, passes={self._passes})")


def _rows_of(ref) -> int:
    """Rows of an array in Ray's object store, without fetching it into the driver."""
    import ray

    # A lambda travels by value: the task's worker need not import ntkdist.
    return get(ray.remote(num_cpus=0)(lambda X: len(X)).remote(ref))
