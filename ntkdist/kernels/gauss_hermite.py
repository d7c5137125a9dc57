"""Gauss–Hermite rules for N(0, 1) and the weighted normalised Hermite functions w_i h_n(z_i) on their nodes: the
quadrature behind the Mehler series of `ntkdist.kernels.hermite_dual`.

The nodes are scipy's, polished by one Newton step; the weights w_i and the values w_i h_n(z_i) come from the
three-term recurrence in rescaled form (Christoffel numbers w_i = 1/Σ_{n<M} h_n(z_i)²), which stays accurate where
h_n overflows or w_i underflows (nodes up to |z| ≈ 2√M ≈ 180).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import roots_hermitenorm

_RESCALE = 2.0 ** 300
_LOG_RESCALE = 300.0 * math.log(2.0)


def hermite_recurrence(z, steps, *, columns=None, log_weight=None):
    """Run h_{n+1} = (z h_n − √n h_{n−1})/√(n+1) on the nodes ``z`` with rescaling.

    Returns (h_{steps}, h_{steps−1}) in a common per-node scale, Σ_{n<steps} h_n² in the square of that scale and
    the log of the scale. With ``columns`` (a callable) and ``log_weight``, calls ``columns(n, w·h_n)`` for every
    n < steps, where w·h_n is formed as (scaled h_n)·exp(log w + log scale) (underflow to 0 is harmless there).
    """
    h_prev = np.zeros_like(z)
    h = np.ones_like(z)
    log_scale = np.zeros_like(z)
    total = np.ones_like(z)
    factor = None if log_weight is None else np.exp(log_weight)
    if columns is not None:
        columns(0, h * factor)
    for n in range(1, steps + 1):
        h_prev, h = h, (z * h - math.sqrt(n - 1) * h_prev) / math.sqrt(n)
        if n < steps:
            total += h * h
        if n % 8 == 0:
            big = np.abs(h) > _RESCALE
            if big.any():
                scale = np.where(big, 1.0 / _RESCALE, 1.0)
                h *= scale
                h_prev *= scale
                total *= scale * scale
                log_scale += np.where(big, _LOG_RESCALE, 0.0)
                if factor is not None:
                    factor = np.exp(log_weight + log_scale)
        if columns is not None and n < steps:
            columns(n, h * factor)
    return h, h_prev, total, log_scale


@lru_cache(maxsize=None)
def gauss_hermite_rule(order: int):
    """The positive half of the ``order``-point Gauss–Hermite rule for N(0, 1) (``order`` even).

    Returns
    -------
    z, log_w : (order/2,) arrays
        Nodes z_i > 0 (ascending) and the log of their probability weights; the rule is symmetric, Σ w = 1.
    """
    if order % 2:
        raise ValueError(f"order: must be even, got {order}")
    z = roots_hermitenorm(order)[0][order // 2:].astype(np.float64)
    h_m, h_m1, _, _ = hermite_recurrence(z, order)
    z = z - h_m / (math.sqrt(order) * h_m1)  # one Newton step on He_M (He_M' = M·He_{M−1}), scale-free ratio
    _, _, total, log_scale = hermite_recurrence(z, order)
    log_w = -(np.log(total) + 2.0 * log_scale)  # Christoffel numbers 1/Σ_{n<M} h_n(z_i)²
    z.setflags(write=False)
    log_w.setflags(write=False)
    return z, log_w


def weighted_hermite_columns(order: int, count: int, *, block=None):
    """Values w_i h_n(z_i) on the positive nodes of the ``order``-point rule, for n < ``count``.

    Returns an (order/2, count) array, or with ``block`` (a callable taking (first_n, columns)) streams the columns
    in blocks of 256 instead of keeping them.
    """
    z, log_w = gauss_hermite_rule(order)
    width = min(count, 256) if block is not None else count
    out = np.empty((z.size, max(width, 1)))
    state = {"first": 0}

    def columns(n, values):
        j = n - state["first"]
        out[:, j] = values
        if block is not None and (j == width - 1 or n == count - 1):
            block(state["first"], out[:, :j + 1])
            state["first"] = n + 1

    if count > 0:
        hermite_recurrence(z, count, columns=columns, log_weight=log_w)
    return None if block is not None else out[:, :count]
