"""Spectral summaries that need no eigensolver: the trace, exact from the diagonal.

The effective rank eff(K) = Tr K / λ_1 (Huang–Hsu–Vershynin; Murray, Jin, Bowman, Montúfar 2023, Sec. 4.1) has
its one home in `ntkdist.theory.bounds.effective_rank`; combine this trace with a certified λ_1 there.
"""

from __future__ import annotations

import math

import numpy as np


def trace(diagonal) -> float:
    """Tr K = Σ_i K_ii, summed exactly (``math.fsum``: correctly rounded), from the operator's diagonal.

    For a float32 store the stored diagonal differs from K's by at most u·Σ|K_ii| (u = 2⁻²⁴); that bound is the
    caller's to add (the operator's ``error_bound`` is a spectral-norm bound, not a trace bound).
    """
    values = np.asarray(diagonal, dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)):
        raise ValueError("diagonal: contains NaN or inf")
    return math.fsum(values.tolist())
