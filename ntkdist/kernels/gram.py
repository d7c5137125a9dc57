"""Gram matrices of the analytic kernels, tile by tile.

Every entry is computed inside a tile of ``TILE × TILE`` pairs whose input inner products come from one BLAS
call of a fixed shape (rows zero-padded to ``TILE``). BLAS results depend on the shapes of the call, not on
where a row sits in it, so an entry's value is the same whichever block, tile or run computed it: a Gram matrix
assembled from stored blocks of any size equals `ntk` of the whole data set bit for bit. For symmetric Gram
matrices, the pair (i, j) is always computed with the lower index as the row, so both triangles agree exactly.

Input inner products of near-parallel pairs (1 − cos < ``NEAR_PARALLEL``) are recomputed from the difference
of the normalised rows, 1 − cos = ‖x̂ − ŷ‖²/2, and those of near-antiparallel pairs from their sum,
1 + cos = ‖x̂ + ŷ‖²/2. That keeps their angle accurate where ⟨x, y⟩ from a product has lost half the digits;
a point's correlation with itself is then exactly 1.

The tiling (argument checks, padding, the tile grid, the mirrored store) is `ntkdist.kernels.tiles`, shared with
the empirical kernel. The mathematics, with its conventions, errata and tests: docs/theory.md §1.3 and §1.4.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._xp import array_module
from .analytic import recursion
from .blas_threads import one_blas_thread
from .network import MLP
from .output_memory import output_array, streams_output
from .tiles import check_kind_dtype, gemm_operand, padded, store_tile, tile_grid

#: Rows and columns of one tile; fixed so that every entry's arithmetic is the same in every call.
TILE = 256
#: The revision of the engines' arithmetic, bumped by any change that alters the bits an engine returns (the tile,
#: an operation's order, a formula's form): stores record the revision that built them (`kernel_arithmetic` in
#: their versions), and `ntkdist verify` expects a float64 store's entries bit for bit only from that revision.
#: 1: up to 2026-12-01. 2: erf's arcsines as arctan2 of sine and cosine, the fused erf layer's single division.
ARITHMETIC_REVISION = 2
#: Pairs with 1 − cos(x, y) below this get their angle from the difference of the normalised rows.
NEAR_PARALLEL = 1e-2
#: Near-parallel pairs are gathered this many at a time (bounds the temporary to a few MiB per tile).
_GATHER = 4096

ENGINES = ("auto", "fused", "array")


def validate_inputs(X, Y=None):
    """Check and convert inputs: 2-D, finite, equal feature dimension; returns float64 arrays.

    Raises
    ------
    ValueError
        Naming the argument and what is wrong with it.
    """
    xp = array_module(X) if Y is None else array_module(X, Y)
    arrays = {"X": X} if Y is None else {"X": X, "Y": Y}
    out = {}
    for name, a in arrays.items():
        a = xp.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D array (points × features), got shape {tuple(a.shape)}")
        if a.shape[1] == 0:
            raise ValueError(f"{name}: has zero features; inputs need at least one column")
        if a.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected real numbers, got dtype {a.dtype}")
        a = a.astype(xp.float64, copy=False)
        if not bool(xp.isfinite(a).all()):
            bad = int((~xp.isfinite(a)).any(axis=1).argmax())
            raise ValueError(f"{name}: row {bad} contains NaN or inf; remove or impute it")
        out[name] = a
    if Y is not None and out["X"].shape[1] != out["Y"].shape[1]:
        raise ValueError(
            f"Y: has {out['Y'].shape[1]} features but X has {out['X'].shape[1]}; both must share the input dimension"
        )
    return out["X"], out.get("Y")


def row_sq_norms(X):
    """‖x_i‖² per row; einsum reduces each row alone, so the value does not depend on the other rows."""
    xp = array_module(X)
    return xp.einsum("ij,ij->i", X, X)


def unit_rows(X, sq):
    """The rows of X divided by their norms √sq (zero rows stay zero): the x̂ of the near-parallel rule."""
    xp = array_module(X)
    return X / xp.sqrt(xp.where(sq > 0, sq, 1.0))[:, None]


def near_parallel(gap, norm_product):
    """Where a pair's gap ‖x‖‖y‖ ∓ ⟨x, y⟩ is below ``NEAR_PARALLEL``·‖x‖‖y‖ (1 ∓ cos < 10⁻²; never for a zero
    row): there the product ⟨x, y⟩ has lost digits to cancellation and the gap is taken from `unit_gap`."""
    return (gap < NEAR_PARALLEL * norm_product) & (norm_product > 0.0)


def unit_gap(x_hat, y_hat, sign: float):
    """1 + sign·cos(x, y) = ‖x̂ + sign·ŷ‖²/2 for paired rows of unit vectors (sign −1: near-parallel pairs, +1:
    near-antiparallel); einsum reduces each pair alone, so a value does not depend on the other pairs."""
    xp = array_module(x_hat)
    diff = x_hat + sign * y_hat
    return 0.5 * xp.einsum("ij,ij->i", diff, diff)


def input_moments(X_tile, Y_tile, sq_x, sq_y, n_x, n_y):
    """Inner products and their Cauchy–Schwarz gaps, near-(anti)parallel pairs without cancellation.

    The one definition of the input moments: the compiled engines mirror it (``fused_gpu.cu``,
    `fused_cpu`), and `ntkdist.theory.bounds.nguyen_layer_kernels` calls it.

    Parameters
    ----------
    X_tile, Y_tile : (≥n_x, d), (≥n_y, d) arrays
        Rows of points (a tile's zero padding below the first ``n_x``, ``n_y`` is ignored).
    sq_x, sq_y : (n_x,), (n_y,) arrays
        Squared row norms (from `row_sq_norms`).

    Returns
    -------
    inner, gap_parallel, gap_antiparallel : (n_x, n_y) arrays
        ⟨x, y⟩ and ‖x‖‖y‖ ∓ ⟨x, y⟩ ≥ 0. Where `near_parallel` holds, the gap is ‖x‖‖y‖·`unit_gap` and the other
        two values follow from it.
    """
    xp = array_module(X_tile)
    inner = (X_tile @ Y_tile.T)[:n_x, :n_y]
    # √ of the product (not the product of √): for x = y it is exactly ‖x‖², the same arithmetic as sq_x.
    norm_product = xp.sqrt(sq_x[:, None] * sq_y[None, :])
    below = norm_product - inner
    above = norm_product + inner
    for sign, gap, other in ((-1.0, below, above), (1.0, above, below)):
        rows, cols = xp.nonzero(near_parallel(gap, norm_product))
        if rows.size == 0:
            continue
        x_hat = unit_rows(X_tile[:n_x], sq_x)
        y_hat = unit_rows(Y_tile[:n_y], sq_y)
        for start in range(0, rows.size, _GATHER):
            r, c = rows[start:start + _GATHER], cols[start:start + _GATHER]
            gap[r, c] = norm_product[r, c] * unit_gap(x_hat[r], y_hat[c], sign)
            inner[r, c] = sign * (gap[r, c] - norm_product[r, c])
            other[r, c] = norm_product[r, c] * 2.0 - gap[r, c]  # ≈ 2‖x‖‖y‖: no cancellation
    return inner, xp.maximum(below, 0.0), xp.maximum(above, 0.0)


def _tile_kernel(net, kind, X_tile, Y_tile, sq_x, sq_y, n_x, n_y):
    inner, below, above = input_moments(X_tile, Y_tile, sq_x, sq_y, n_x, n_y)
    nngp, ntk = recursion(net, X_tile.shape[1], inner, sq_x, sq_y, below, above, want_ntk=(kind == "ntk"))
    return ntk if kind == "ntk" else nngp


def default_threads() -> int:
    """Threads for the tile loop: ``NTKDIST_THREADS`` if set, else the CPUs this process may run on."""
    env = os.environ.get("NTKDIST_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_engine(engine: str, xp, activation) -> str:
    """The engine a Gram computation will use.

    ``"auto"`` picks the fused compiled path when it has the activation (ABReLU family and erf: `fused_cpu`
    for NumPy inputs, `fused_gpu` for CuPy inputs), else the NumPy/CuPy reference path ``"array"``. The two agree
    to a few ulps; a given engine is bit-for-bit reproducible, and every caller (`ntk`, the store's workers) uses
    ``"auto"``, so a stored Gram matrix equals `ntk` of its inputs exactly.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine: must be one of {', '.join(ENGINES)}, got {engine!r}")
    on_cpu = xp.__name__ == "numpy"
    fused = _fused_cpu_supports(activation) if on_cpu else _fused_gpu_supports(activation)
    if engine == "auto":
        return "fused" if fused else "array"
    if engine == "fused" and not fused:
        raise ValueError(f"engine: \"fused\" has no {activation.describe()} kernel for "
                         f"{'NumPy' if on_cpu else 'CuPy'} inputs; use engine=\"auto\"")
    return engine


def _fused_cpu_supports(activation) -> bool:
    try:
        from . import fused_cpu
    except ImportError:  # numba missing: the reference path still works
        return False
    return fused_cpu.supports(activation)


def _fused_gpu_supports(activation) -> bool:
    from . import fused_gpu

    return fused_gpu.supports(activation)


def gram_block(X_rows, X_cols=None, *, net: MLP, kind: str = "ntk", dtype: str = "float64",
               engine: str = "auto", threads: int | None = None):
    """The kernel between two sets of points: the entry point of workers that build stored Gram blocks.

    Parameters
    ----------
    X_rows : (n, d) array
        NumPy or CuPy; the result lives in the same array module.
    X_cols : (m, d) array or None
        None means ``X_rows`` itself: the symmetric Gram, computed once per pair and mirrored.
    net : MLP
    kind : {"ntk", "nngp"}
    dtype : {"float64", "float32"}
        Storage precision of the result. The arithmetic is float64 in either case.
    engine : {"auto", "fused", "array"}
        See `resolve_engine`; leave at "auto" unless comparing engines.
    threads : int, optional
        CPU threads over tiles (default `default_threads`); BLAS runs single-threaded inside each.

    Returns
    -------
    (n, m) array of the infinite-width kernel, not divided by n.
    """
    check_kind_dtype(kind, dtype)
    symmetric = X_cols is None
    X, Y = validate_inputs(X_rows, None if symmetric else X_cols)
    if symmetric:
        Y = X
    xp = array_module(X)
    engine = resolve_engine(engine, xp, net.activation)
    n, m = X.shape[0], Y.shape[0]
    out = output_array(xp, (n, m), dtype)
    if n == 0 or m == 0:
        return out
    sq_x = row_sq_norms(X)
    sq_y = sq_x if symmetric else row_sq_norms(Y)
    if engine == "fused" and xp.__name__ != "numpy":
        from . import fused_gpu

        return fused_gpu.gram(X, None if symmetric else Y, net=net, kind=kind, dtype=dtype, sq_x=sq_x, sq_y=sq_y,
                              near=NEAR_PARALLEL)
    Xp = padded(X, TILE)
    Yp = Xp if symmetric else padded(Y, TILE)
    tiles = tile_grid(n, m, TILE, symmetric)
    if engine == "fused":
        run = _fused_runner(net, kind, X, Y, Xp, Yp, sq_x, sq_y, symmetric, out)
    else:
        stream = streams_output(out.nbytes)

        def run(tile):
            i0, j0 = tile
            i1, j1 = min(i0 + TILE, n), min(j0 + TILE, m)
            Y_tile = gemm_operand(Yp[j0:j0 + TILE], symmetric and i0 == j0)
            values = _tile_kernel(net, kind, Xp[i0:i0 + TILE], Y_tile, sq_x[i0:i1], sq_y[j0:j1], i1 - i0, j1 - j0)
            store_tile(out, values, i0, j0, symmetric, stream)

    if xp.__name__ != "numpy":
        for tile in tiles:
            run(tile)
        return out
    # Parallel over tiles, one BLAS thread each: the tile GEMMs are small and many, and a multi-threaded BLAS
    # inside a busy tile loop spends its time waiting for its own threads.
    workers = min(threads or default_threads(), len(tiles))
    with one_blas_thread():
        if workers <= 1:
            for tile in tiles:
                run(tile)
        else:
            with ThreadPoolExecutor(workers) as pool:
                for _ in pool.map(run, tiles):
                    pass
    return out


def _fused_runner(net: MLP, kind: str, X, Y, Xp, Yp, sq_x, sq_y, symmetric: bool, out):
    """The per-tile function of the fused CPU engine: BLAS product, then `fused_cpu.fused_tile`.

    An output small enough to stay in cache is written in place (the mirror tile by a blocked transpose). A
    larger one (`output_memory.streams_output`) is computed into a per-thread tile, which stays in cache, and
    streamed out with its mirror: the output's lines are written without being read first.
    """
    from .fused_cpu import activation_parameters, fused_tile, mirror_upper, transpose_into
    from .streaming_stores import stream_tile

    x_hat = unit_rows(X, sq_x)
    y_hat = x_hat if symmetric else unit_rows(Y, sq_y)
    params = activation_parameters(net.activation)
    want_ntk = kind == "ntk"
    n, m = out.shape
    stream = streams_output(out.nbytes)
    scratch = threading.local()

    def run(tile):
        i0, j0 = tile
        i1, j1 = min(i0 + TILE, n), min(j0 + TILE, m)
        diagonal = symmetric and i0 == j0
        inner = Xp[i0:i0 + TILE] @ gemm_operand(Yp[j0:j0 + TILE], diagonal).T
        if stream:
            if not hasattr(scratch, "tile"):  # one per pool thread, reused by all its tiles
                scratch.tile = np.empty((TILE, TILE), out.dtype)
                scratch.strip = np.empty((8, TILE), out.dtype)
            target = scratch.tile[:i1 - i0, :j1 - j0]
        else:
            target = out[i0:i1, j0:j1]
        fused_tile(inner, x_hat[i0:i1], y_hat[j0:j1], sq_x[i0:i1], sq_y[j0:j1], NEAR_PARALLEL, net.depth,
                   net.weight_var, net.bias_var, *params, want_ntk, target, diagonal)
        if diagonal:
            mirror_upper(target)  # the lower triangle, which fused_tile left out
        if stream:
            stream_tile(target, out, i0, j0, symmetric and not diagonal, scratch.strip)
        elif symmetric and not diagonal:
            transpose_into(target, out[j0:j1, i0:i1])

    return run


def ntk(X, Y=None, *, net: MLP, dtype: str = "float64", engine: str = "auto", threads: int | None = None):
    """Infinite-width neural tangent kernel Θ(x_i, y_j) of ``net`` (neural-tangents ``stax`` convention).

    Parameters
    ----------
    X : (n, d) array, NumPy or CuPy
    Y : (m, d) array or None
        None gives the symmetric (n, n) Gram matrix of X.
    net : MLP
    dtype : {"float64", "float32"}
        Precision of the returned array (arithmetic is float64).

    Returns
    -------
    (n, m) array in the array module of X: the Gram matrix itself, not divided by n.
    """
    return gram_block(X, Y, net=net, kind="ntk", dtype=dtype, engine=engine, threads=threads)


def nngp(X, Y=None, *, net: MLP, dtype: str = "float64", engine: str = "auto", threads: int | None = None):
    """Infinite-width NNGP kernel Σ(x_i, y_j) of the readout of ``net``; arguments as `ntk`."""
    return gram_block(X, Y, net=net, kind="nngp", dtype=dtype, engine=engine, threads=threads)

