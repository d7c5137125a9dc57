"""The tiling both Gram engines share: argument checks, zero-padding to whole tiles, the tile
grid, and storing a tile (with its mirror) into the output (allocated by `output_memory.output_array`).

Every kernel entry is computed inside a tile whose BLAS products have one fixed shape (rows zero-padded to the
engine's tile size). BLAS results depend on the shapes of a call, not on where a row sits in it, so an entry's
value is the same whichever block, tile or run computed it, and blocks assemble bit for bit into the whole Gram
matrix. In a symmetric Gram each pair is computed once, with the lower index as the row, and mirrored, so both
triangles agree exactly. The analytic engine (`ntkdist.kernels.gram`) and the empirical one
(`ntkdist.kernels.empirical`) each name their tile size (``TILE``) and say why it is what it is.
"""

from __future__ import annotations

import numpy as np

from ._xp import array_module
from .streaming_stores import stream_tile

KINDS = ("ntk", "nngp")
DTYPES = ("float64", "float32")


def check_kind_dtype(kind, dtype) -> None:
    """ValueError naming the field unless ``kind`` is in `KINDS` and ``dtype`` in `DTYPES`."""
    if kind not in KINDS:
        raise ValueError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    if str(dtype) not in DTYPES:
        raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")


def padded(X, tile: int):
    """X (float64) with zero rows appended up to a whole number of tiles (at least one), so that every tile view
    has the same shape."""
    xp = array_module(X)
    rows = -(-max(X.shape[0], 1) // tile) * tile
    out = xp.zeros((rows, X.shape[1]), dtype=xp.float64)
    out[:X.shape[0]] = X
    return out


def tile_grid(n: int, m: int, tile: int, symmetric: bool) -> list[tuple[int, int]]:
    """(i0, j0) of every tile of an (n, m) output; for a symmetric Gram only the tiles on or above the diagonal."""
    return [(i0, j0) for i0 in range(0, n, tile) for j0 in range(i0 if symmetric else 0, m, tile)]


def gemm_operand(cols, diagonal: bool):
    """The right operand of a tile's product: a copy on a diagonal tile of a symmetric Gram, because numpy routes
    A @ A.T (the same buffer twice) to SYRK, whose rounding may differ from the GEMM of every other tile."""
    return cols.copy() if diagonal else cols


def store_tile(out, values, i0: int, j0: int, symmetric: bool, stream: bool = False) -> None:
    """Write a tile's (i1 − i0, j1 − j0) values into ``out`` at (i0, j0); in a symmetric Gram also its mirror.

    A diagonal tile of a symmetric Gram keeps its upper triangle (row = lower index) and mirrors it into the
    lower one; an off-diagonal tile is written again, transposed, at (j0, i0). With ``stream`` (the caller asks
    `output_memory.streams_output` once per output) a NumPy output is written by streaming stores.
    """
    xp = array_module(out)
    i1, j1 = i0 + values.shape[0], j0 + values.shape[1]
    diagonal = symmetric and i0 == j0
    if diagonal:
        values = xp.triu(values) + xp.triu(values, 1).T
    if stream and xp is np:
        values = np.ascontiguousarray(values, dtype=out.dtype)  # rounded to the output's precision, as below
        stream_tile(values, out, i0, j0, symmetric and not diagonal, np.empty((8, values.shape[0]), out.dtype))
        return
    out[i0:i1, j0:j1] = values
    if symmetric and not diagonal:
        out[j0:j1, i0:i1] = values.T
