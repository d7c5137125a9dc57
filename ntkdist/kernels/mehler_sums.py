"""Horner evaluation of the Mehler sums Σ_k x_k y_k t^k (t = ρ²) of `ntkdist.kernels.hermite_dual`, in three
forms: outer products for a tile (`horner_outer`), coefficients shared by a whole tile (`horner_scalar`) and flat
pairs (`horner_pairs`), plus the rectangle and diagonal evaluations built from them.

All three forms do the same floating-point operations per entry: s ← s·t + fl(x_k·y_k), starting from
s = fl(x_K·y_K). A pair's value is therefore the same whichever form computed it.
"""

from __future__ import annotations

import numpy as np

from ._xp import array_module, to_numpy
from .blas_threads import blas_controller

#: Rectangles with at most this many (distinct row, distinct column) coefficient pairs use scalar Horner.
_SCALAR_GROUPS = 4


def diagonal_moments(xp, coef, positions):
    """(E φ², E φ'²) of the coefficient rows at ``positions``: the pair arithmetic at ρ = 1."""
    picked = [cf[:, positions] for cf in coef]
    one = xp.ones(picked[0].shape[1])
    sums = [horner_pairs(one, cf, cf) for cf in picked]
    return sums[0] + one * sums[1], sums[2] + one * sums[3]


def evaluate_outer(xp, coef_x, coef_y, gx, gy, t, c):
    """cov and dcov of a rectangle whose rows use coefficient columns gx of coef_x and whose columns use gy of
    coef_y (host index arrays).

    Few distinct rows and columns (data of equal norms: after quantisation every row has the same variance) take
    the scalar Horner per group, about 3.5× faster per term than the outer-product form; both do the same
    floating-point operations per entry.
    """
    rows, cols = np.unique(gx), np.unique(gy)
    if rows.size * cols.size > _SCALAR_GROUPS:
        gx, gy = xp.asarray(gx), xp.asarray(gy)
        sums = [horner_outer(xp, t, cx[:, gx], cy[:, gy]) for cx, cy in zip(coef_x, coef_y)]
        return sums[0] + c * sums[1], sums[2] + c * sums[3]
    if rows.size == 1 and cols.size == 1:
        sums = [horner_scalar(t, cx[:, int(rows[0])], cy[:, int(cols[0])]) for cx, cy in zip(coef_x, coef_y)]
        return sums[0] + c * sums[1], sums[2] + c * sums[3]
    cov, dcov = xp.empty(t.shape), xp.empty(t.shape)
    for a in rows:
        for b in cols:
            block = xp.ix_(xp.asarray(np.nonzero(gx == a)[0]), xp.asarray(np.nonzero(gy == b)[0]))
            tb, cb = t[block], c[block]
            sums = [horner_scalar(tb, cx[:, int(a)], cy[:, int(b)]) for cx, cy in zip(coef_x, coef_y)]
            cov[block] = sums[0] + cb * sums[1]
            dcov[block] = sums[2] + cb * sums[3]
    return cov, dcov



_BLAS = {}


def _single_threaded_dger():
    """scipy's BLAS dger when every loaded BLAS runs one thread (as inside `gram_block`), else None.

    A multi-threaded dger on a 256 × 256 tile spends its time waiting for its own threads when the cores are busy
    (60× slower on a loaded machine); the broadcast product then does the same arithmetic without BLAS.
    """
    try:
        if "dger" not in _BLAS:
            from scipy.linalg.blas import dger

            _BLAS["dger"] = dger
        libraries = blas_controller().lib_controllers
        if libraries and all(library.num_threads == 1 for library in libraries):
            return _BLAS["dger"]
    except Exception:  # pragma: no cover - no threadpoolctl, or an unknown BLAS: the broadcast path is exact too
        pass
    return None


def horner_outer(xp, t, x, y):
    """x: (K, n), y: (K, m), t: (n, m) → Σ_k x_k ⊗ y_k ∘ t^k."""
    terms = x.shape[0]
    if terms == 0:
        return xp.zeros(t.shape)
    s = x[terms - 1][:, None] * y[terms - 1][None, :]
    buf = xp.empty(t.shape)
    dger = _single_threaded_dger() if xp.__name__ == "numpy" and terms > 1 else None
    if dger is not None:
        # BLAS dger on a zeroed buffer is 25% faster than a broadcast product and exactly fl(x_i·y_j): with α = 1
        # and A = 0 every implementation (FMA or not) rounds the one product once.
        transposed = buf.T  # Fortran-ordered view: dger updates it in place
        for k in range(terms - 2, -1, -1):
            s *= t
            buf.fill(0.0)
            dger(1.0, y[k], x[k], a=transposed, overwrite_a=1)
            s += buf
        return s
    for k in range(terms - 2, -1, -1):
        s *= t
        xp.multiply(x[k][:, None], y[k][None, :], out=buf)
        s += buf
    return s


def horner_scalar(t, x, y):
    """x, y: (K,) coefficients shared by every entry."""
    return _horner(array_module(t), t, to_numpy(x * y))


def horner_pairs(t, x, y):
    """x, y: (K, P), t: (P,) → Σ_k x_k y_k t^k per pair."""
    return _horner(array_module(t), t, x * y)


def _horner(xp, t, products):
    """Σ_k products[k]·t^k by Horner, s ← s·t + products[k] from s = products[K−1] (each products[k] a scalar or an
    array of t's shape): the one loop behind `horner_scalar` and `horner_pairs`."""
    terms = len(products)
    if terms == 0:
        return xp.zeros(t.shape)
    s = xp.empty(t.shape)
    s[...] = products[terms - 1]
    for k in range(terms - 2, -1, -1):
        s *= t
        s += products[k]
    return s
