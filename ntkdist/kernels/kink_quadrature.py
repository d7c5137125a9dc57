"""E[φ(u)φ(v)] and E[φ'(u)φ'(v)] of one pair by the conditional expectation and graded Gauss–Legendre panels: the
rule `ntkdist.kernels.hermite_dual` uses where the Mehler series would need too many terms (large variances).

For (u, v) = (√q_x Z₁, √q_y (ρ Z₁ + √(1 − ρ²) Z₂)), Z₁, Z₂ independent N(0, 1),

    E[φ(u)φ(v)] = E_{Z₁}[ φ(√q_x Z₁) · g(ρ√q_y Z₁, s) ],    g(m, s) = E[φ(m + sZ₂)],   s = √(q_y (1 − ρ)(1 + ρ)),

and the same with φ' for E[φ'(u)φ'(v)]. At large q the integrand is step-like: φ(√q z) changes at the kink scale
1/√q around z = 0, φ(m + s z₂) at the scale 1/s around z₂ = −m/s. Gauss–Hermite cannot resolve that (its node
spacing near 0 is ≈ π/√(2M)); a composite rule graded towards the kink can. Both integrals use the same
`graded_panels`: on [−L, L] (L = 8.5: the Gaussian mass outside is 2·10⁻¹⁷) the union of

* the Gaussian grid −L, −L + 2.125, …, L (the smooth weight e^{−z²/2} needs panels ≲ 2 wide), and
* the kink κ and κ ± w·2^k, k = 0 … K (w the kink scale, 2^K·w ≥ 2.125): every panel near κ is at most as wide as
  its distance from κ, so for φ analytic in a strip |Im x| < τ (tanh: τ = π/2, sigmoid and softplus: π) each panel
  sees the nearest singularity at ≥ 1.5 half-widths beyond its ends, and `NODES`-point Gauss–Legendre converges
  geometrically on every panel (Trefethen, *Approximation Theory and Approximation Practice*, Thm 19.3). A kink
  that is a true corner at x = 0 (|x|, ReLU-like custom activations) is a panel end.

The outer rule depends on the pair's level only (kink scale w = 2^{−j/4} = 1/√(2^{j/2}), the largest variance of
level j), the inner on (m, s) of each outer node; with s = 0 (ρ = ±1) the inner rule returns φ(m) times the rule's
mass 1 − 2·10⁻¹⁷. A pair's value therefore depends only on (q_x, q_y, ρ) and its level: the sums run over fixed
shapes along the last axis, never across pairs.

Accuracy: against the same rule with 20 nodes a panel, ≤ 8·10⁻¹⁶ normwise for tanh, sigmoid and softplus at
q ∈ [16, 10⁴] (10 nodes: 3·10⁻¹⁴, 8 nodes: 3·10⁻¹¹), and within 1e-10 of an independent tanh–sinh reference
converged to 10⁻¹³ (tests/kernels/test_series_every_variance.py, also SiLU). φ' of a `custom` activation without
a derivative is its numerical derivative (eighth-order differences, ~10⁻¹³ relative).
Cost: (panels · NODES)² evaluations of φ and φ' per pair, 21 panels at q ≤ 128 and 25 at q = 10⁴: ≈ 7–15 ms a
pair on one loaded core (docs/theory.md §2.6).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: Half-width of the integration range in standard-normal units: P(|Z| > 8.5) = 1.9·10⁻¹⁷.
HALF_RANGE = 8.5
#: Width of the panels that resolve the Gaussian weight (8 panels on [−8.5, 8.5]; 6 panels lose 3·10⁻¹²).
GAUSSIAN_PANEL = 17.0 / 8.0
#: Gauss–Legendre nodes per panel.
NODES = 12
#: Pairs evaluated together (bounds the (pairs, outer, inner) work arrays to a few tens of MB).
_CHUNK = 8
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=None)
def _legendre():
    x, w = np.polynomial.legendre.leggauss(NODES)
    return 0.5 * (x + 1.0), 0.5 * w  # on [0, 1]


def _gaussian_grid():
    count = int(round(2 * HALF_RANGE / GAUSSIAN_PANEL))
    return np.linspace(-HALF_RANGE, HALF_RANGE, count + 1)


def grading_steps(scale_ratio: float) -> int:
    """K such that the kink panels reach the Gaussian panel width: 2^K·w ≥ GAUSSIAN_PANEL for w ≥ 1/scale_ratio."""
    return max(0, math.ceil(math.log2(GAUSSIAN_PANEL * max(scale_ratio, 1.0))))


def graded_panels(kink, width, steps: int):
    """Nodes and weights of the graded composite rule for ∫_{−L}^{L} f(z) e^{−z²/2}/√(2π) dz (module docstring).

    ``kink`` and ``width`` are arrays of one shape S (kink position and scale in z; inf and huge values are
    clipped away); returns nodes and weights of shape S + (panels·NODES,), the Gaussian density folded into the
    weights. Every entry uses the same number of panels (some of zero width), so shapes never depend on data.
    """
    kink = np.asarray(kink, dtype=np.float64)
    width = np.asarray(width, dtype=np.float64)
    offsets = np.ldexp(1.0, np.arange(steps + 1))  # 1, 2, …, 2^K
    with np.errstate(over="ignore", invalid="ignore"):
        spread = width[..., None] * offsets
        kinks = np.concatenate([kink[..., None], kink[..., None] - spread, kink[..., None] + spread], axis=-1)
    kinks = np.clip(np.nan_to_num(kinks, nan=0.0), -HALF_RANGE, HALF_RANGE)
    grid = np.broadcast_to(_gaussian_grid(), kink.shape + (_gaussian_grid().size,))
    edges = np.sort(np.concatenate([grid, kinks], axis=-1), axis=-1)
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    t, w = _legendre()
    nodes = lo + (hi - lo) * t
    weights = (hi - lo) * w * np.exp(-0.5 * nodes * nodes) * _INV_SQRT_2PI
    shape = kink.shape + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


def conditional_pairs(fn, derivative, qx, qy, rho, kink_scale: float):
    """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) of the pairs (1-D host arrays qx, qy, rho), by the conditional expectation
    with graded Gauss–Legendre panels (module docstring).

    ``kink_scale`` is the largest variance the rule must resolve (the top of the pairs' level); the outer rule and
    the number of inner panels depend on it alone.
    """
    qx, qy, rho = (np.ascontiguousarray(a, dtype=np.float64).reshape(-1) for a in (qx, qy, rho))
    steps = grading_steps(math.sqrt(kink_scale))
    z1, w1 = graded_panels(np.zeros(()), np.array(1.0 / math.sqrt(kink_scale)), steps)
    cov = np.empty(qx.size)
    dcov = np.empty(qx.size)
    for start in range(0, qx.size, _CHUNK):
        sl = slice(start, start + _CHUNK)
        cov[sl], dcov[sl] = _chunk(fn, derivative, qx[sl], qy[sl], rho[sl], z1, w1, steps)
    return cov, dcov


def _chunk(fn, derivative, qx, qy, rho, z1, w1, steps):
    """One fixed-size slab of pairs; every reduction runs along the last axis, per pair."""
    root_y = np.sqrt(qy)
    s = root_y * np.sqrt(np.maximum((1.0 - rho) * (1.0 + rho), 0.0))  # (1 − ρ)(1 + ρ): no cancellation at |ρ| ≈ 1
    m = (rho * root_y)[:, None] * z1[None, :]  # (pairs, outer)
    s_safe = np.maximum(s, 1e-300)[:, None]
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        z2, w2 = graded_panels(-m / s_safe, np.broadcast_to(1.0 / s_safe, m.shape), steps)
    v = m[..., None] + s[:, None, None] * z2  # (pairs, outer, inner)
    g = (fn(v) * w2).sum(axis=-1)
    dg = (derivative(v) * w2).sum(axis=-1)
    u = np.sqrt(qx)[:, None] * z1[None, :]
    outer = np.broadcast_to(w1, u.shape)
    return (fn(u) * g * outer).sum(axis=-1), (derivative(u) * dg * outer).sum(axis=-1)
