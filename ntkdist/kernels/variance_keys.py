"""Small helpers of `ntkdist.kernels.hermite_dual` for the per-row variances: rounding them so equal norms share
coefficients, checking them, keying caches by their content, and merging the rows and columns of a tile."""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from ._xp import to_numpy


def content_key(a):
    """A hashable key of an array's shape and bytes (a cache key for the coefficients of one side)."""
    host = to_numpy(a)
    return (host.shape, host.tobytes())


def quantize_variances(q, bits):
    """q rounded to ``bits`` significant bits (relative change ≤ 2^-bits); 0 stays 0.

    Variances that agree to rounding (points of equal norm) then share one set of coefficients, which the scalar
    Horner path exploits; the kernel moves by far less than ``tol`` (bits = ⌈log2(64/tol)⌉).
    """
    mantissa, exponent = np.frexp(q)
    scale = 2.0 ** bits
    return np.ldexp(np.round(mantissa * scale) / scale, exponent)


def checked_variances(xp, q, name):
    """The variances, clipped at 0; a `DataError` naming the activation if any is not finite."""
    if not bool(xp.all(xp.isfinite(q))):
        # A UserError: it crosses the Ray boundary as itself (`ntkdist.cluster.runtime.get`).
        raise DataError(f"activation: {name} got a non-finite pre-activation variance (overflow from inputs or "
                        f"weight_var too large, or NaN/inf in the data); rescale or clean the data")
    return xp.maximum(q, 0.0)


def sorted_union(a, b):
    """Sorted unique values of a ∪ b and the positions of a's and b's entries in it."""
    values = np.union1d(a, b)
    return values, (np.searchsorted(values, a), np.searchsorted(values, b))
