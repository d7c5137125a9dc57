"""Every activation against references that share no code with ntkdist.

* Closed forms (gelu, sin, cos, identity, polynomial; erf alongside): Monte Carlo over 10⁶ Gaussian pairs (within
  4 standard errors), and 30-digit mpmath: E[φ(u)φ(v)] = ∫ φ(√q_x z)·E[φ(v) | z] dγ(z) with the conditional
  expectation of v ~ N(√q_y ρ z, q_y(1 − ρ²)) in closed form, a different route from the library's formulas.
* Series activations (tanh, sigmoid, softplus, custom): a 2-D trapezoidal rule on [−8.5, 8.5]², exponentially
  convergent for integrands analytic in a strip (its own convergence is checked here), to the series' tol.
* Whole networks: an independent per-pair recursion (the trapezoidal rule, or 40-digit arc-cosine kernels for the
  ReLU family) against `ntkdist.ntk`, depths 1–5, random weight and bias variances, mixed norms.

Accuracy is judged normwise where an entry is a cancellation far below its Cauchy–Schwarz scale √(E_x E_y)
(`assert_kernel_close`), and relative to the entry itself elsewhere.
"""

from __future__ import annotations

import math
import pickle
import warnings
import zlib

import mpmath as mp
import numpy as np
import pytest
from scipy.special import erf as sp_erf
from scipy.special import erfc, expit

import ntkdist
from ntkdist.kernels import activations as A
from ntkdist.kernels import MLP, get_activation
from ntkdist.kernels.activations import MehlerActivation
from ntkdist.kernels.gauss_hermite import gauss_hermite_rule, weighted_hermite_columns

from ..helpers import assert_kernel_close

POLY = "polynomial(0.3, -1.0, 0.5, 0.25)"
CLOSED = ["gelu", "sin", "cos", "identity", POLY, "erf"]
SERIES = ["tanh", "sigmoid", "softplus"]
RELU_FAMILY = ["relu", "leaky_relu(0.1)", "abs", "abrelu(-0.3, 1.7)"]

#: (q_x, q_y, ρ): unequal variances, identical and near-parallel pairs, near-antiparallel, antiparallel,
#: zero variances, a small variance against a large one.
PAIRS = [(0.7, 2.3, 0.35), (1.3, 1.3, 1.0), (1.3, 1.3, 0.9999999), (0.45, 3.2, -0.999999), (2.0, 0.8, -1.0),
         (0.0, 1.7, 0.0), (0.0, 0.0, 0.0), (3.5, 0.05, 0.8), (1.1, 2.9, 0.0)]


def pair_arrays(pairs=PAIRS):
    qx, qy, c = (np.array(v, dtype=float) for v in zip(*pairs))
    return qx, qy, c, 1.0 - c, 1.0 + c


# ------------------------------------------------------------------------------------------------------------
# Pointwise functions, written here (not taken from the library)
# ------------------------------------------------------------------------------------------------------------

def _sech2(x):
    t = np.exp(-2.0 * np.abs(x))
    return 4.0 * t / (1.0 + t) ** 2


def _poly(coefficients):
    def value(x):
        return sum(c * x**k for k, c in enumerate(coefficients)) + 0.0 * x

    def slope(x):
        return sum(k * c * x ** (k - 1) for k, c in enumerate(coefficients) if k) + 0.0 * x

    return value, slope


POINTWISE = {
    "gelu": (lambda x: 0.5 * x * erfc(-x / math.sqrt(2.0)),
             lambda x: 0.5 * erfc(-x / math.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)),
    "sin": (np.sin, np.cos),
    "cos": (np.cos, lambda x: -np.sin(x)),
    "identity": (lambda x: x + 0.0, lambda x: np.ones_like(x)),
    POLY: _poly([0.3, -1.0, 0.5, 0.25]),
    "polynomial(0.1, 0.7, 0.2)": _poly([0.1, 0.7, 0.2]),
    "erf": (sp_erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x)),
    "tanh": (np.tanh, _sech2),
    "sigmoid": (expit, lambda x: expit(x) * expit(-x)),
    "softplus": (lambda x: np.logaddexp(0.0, x), expit),
}


# ------------------------------------------------------------------------------------------------------------
# References
# ------------------------------------------------------------------------------------------------------------

def trapezoid_pairs(fx, fy, qx, qy, rho, step=0.1, half_width=8.5):
    """E[fx(u) fy(v)] per pair by the trapezoidal rule in (z₁, z₂), u = √q_x z₁, v = √q_y(ρ z₁ + √(1−ρ²) z₂)."""
    z = np.arange(-half_width, half_width + step / 2, step)
    w = step * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    qx, qy, rho = (np.asarray(a, dtype=float).reshape(-1, 1, 1) for a in (qx, qy, rho))
    s = np.sqrt(np.maximum((1.0 - rho) * (1.0 + rho), 0.0))
    u = np.sqrt(qx) * z[None, :, None]
    v = np.sqrt(qy) * (rho * z[None, :, None] + s * z[None, None, :])
    return np.einsum("i,j,pij->p", w, w, fx(u) * fy(v))


def trapezoid_moments(f, q, step=0.1, half_width=8.5):
    z = np.arange(-half_width, half_width + step / 2, step)
    w = step * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    q = np.asarray(q, dtype=float).reshape(-1, 1)
    return (w * f(np.sqrt(q) * z) ** 2).sum(axis=1)


def series_reference(spec, qx, qy, rho):
    """(cov, dcov, E_x, E_y, E'_x, E'_y) of a smooth activation by the trapezoidal rule."""
    f, df = POINTWISE[spec]
    return (trapezoid_pairs(f, f, qx, qy, rho), trapezoid_pairs(df, df, qx, qy, rho),
            trapezoid_moments(f, qx), trapezoid_moments(f, qy), trapezoid_moments(df, qx), trapezoid_moments(df, qy))


def _moment(k, m, s2):
    """E[v^k] for v ~ N(m, s2) (float64, or mpmath numbers)."""
    return sum(math.comb(k, 2 * j) * m ** (k - 2 * j) * s2**j * math.prod(range(2 * j - 1, 0, -2))
               for j in range(k // 2 + 1))


def _conditional(spec):
    """(φ, m, s2 ↦ E[φ(v)], φ', m, s2 ↦ E[φ'(v)]) for v ~ N(m, s2), float64, derived here (Stein's lemma and
    Gaussian convolutions), not from the library's formulas."""
    from scipy.special import ndtr

    def npdf(x):
        return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)

    f, df = POINTWISE[spec]
    if spec == "gelu":
        return (f, lambda m, s2: m * ndtr(m / np.sqrt(1 + s2)) + s2 / np.sqrt(1 + s2) * npdf(m / np.sqrt(1 + s2)),
                df, lambda m, s2: ndtr(m / np.sqrt(1 + s2)) + m * npdf(m / np.sqrt(1 + s2)) / (1 + s2) ** 1.5)
    if spec == "sin":
        return f, lambda m, s2: np.sin(m) * np.exp(-s2 / 2), df, lambda m, s2: np.cos(m) * np.exp(-s2 / 2)
    if spec == "cos":
        return f, lambda m, s2: np.cos(m) * np.exp(-s2 / 2), df, lambda m, s2: -np.sin(m) * np.exp(-s2 / 2)
    if spec == "identity":
        return f, lambda m, s2: m + 0.0 * s2, df, lambda m, s2: 1.0 + 0.0 * (m + s2)
    if spec == "erf":
        return (f, lambda m, s2: sp_erf(m / np.sqrt(1 + 2 * s2)), df,
                lambda m, s2: 2 / math.sqrt(math.pi) * np.exp(-m * m / (1 + 2 * s2)) / np.sqrt(1 + 2 * s2))
    if spec.startswith("polynomial"):
        coefficients = [float(v) for v in spec[len("polynomial("):-1].split(",")]
        slopes = [k * c for k, c in enumerate(coefficients)][1:]
        return (f, lambda m, s2: sum(c * _moment(k, m, s2) for k, c in enumerate(coefficients)),
                df, lambda m, s2: sum(c * _moment(k, m, s2) for k, c in enumerate(slopes)))
    raise KeyError(spec)


def conditional_reference(spec, qx, qy, rho, step=0.05, half_width=10.0):
    """(cov, dcov, E_x, E_y, E'_x, E'_y): E[φ(u)φ(v)] = ∫ φ(√q_x z)·E[φ(v) | z] dγ(z), the conditional expectation
    of v ~ N(√q_y ρ z, q_y(1 − ρ²)) in closed form and the outer integral by the trapezoidal rule (converged to
    rounding for these entire integrands)."""
    f, cond, df, dcond = _conditional(spec)
    z = np.arange(-half_width, half_width + step / 2, step)
    w = step * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    qx, qy, rho = (np.asarray(a, dtype=float).reshape(-1, 1) for a in (qx, qy, rho))
    m, s2 = np.sqrt(qy) * rho * z, qy * (1 - rho) * (1 + rho)
    u = np.sqrt(qx) * z
    return ((w * f(u) * cond(m, s2)).sum(1), (w * df(u) * dcond(m, s2)).sum(1),
            trapezoid_moments(f, qx, step, half_width), trapezoid_moments(f, qy, step, half_width),
            trapezoid_moments(df, qx, step, half_width), trapezoid_moments(df, qy, step, half_width))


def _mp_functions(spec):
    """(φ, E[φ(v)] for v ~ N(m, s2), φ', E[φ'(v)]) in mpmath, the same derivations as `_conditional`."""
    def sigma(s2):
        return mp.sqrt(1 + s2)

    if spec == "gelu":
        return (lambda x: x * mp.ncdf(x),
                lambda m, s2: m * mp.ncdf(m / sigma(s2)) + s2 / sigma(s2) * mp.npdf(m / sigma(s2)),
                lambda x: mp.ncdf(x) + x * mp.npdf(x),
                lambda m, s2: mp.ncdf(m / sigma(s2)) + m * mp.npdf(m / sigma(s2)) / sigma(s2) ** 3)
    if spec == "sin":
        return (mp.sin, lambda m, s2: mp.sin(m) * mp.exp(-s2 / 2), mp.cos, lambda m, s2: mp.cos(m) * mp.exp(-s2 / 2))
    if spec == "cos":
        return (mp.cos, lambda m, s2: mp.cos(m) * mp.exp(-s2 / 2),
                lambda x: -mp.sin(x), lambda m, s2: -mp.sin(m) * mp.exp(-s2 / 2))
    if spec == "erf":
        return (mp.erf, lambda m, s2: mp.erf(m / mp.sqrt(1 + 2 * s2)),
                lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x),
                lambda m, s2: 2 / mp.sqrt(mp.pi) * mp.exp(-m * m / (1 + 2 * s2)) / mp.sqrt(1 + 2 * s2))
    raise KeyError(spec)


def mp_reference(spec, qx, qy, rho, dps=20):
    """(cov, dcov, E_x, E_y, E'_x, E'_y) and the two gaps in ``dps`` digits (mpmath quadrature of the same
    conditional integral); the gaps are formed in mpmath, so they are accurate where float64 would cancel."""
    with mp.workdps(dps):
        f, cond, df, dcond = _mp_functions(spec)
        qx, qy, rho = mp.mpf(qx), mp.mpf(qy), mp.mpf(rho)
        rx, ry = mp.sqrt(qx), mp.sqrt(qy)
        s2 = qy * (1 - rho) * (1 + rho)

        def expect(outer, conditional):
            return mp.quad(lambda z: outer(rx * z) * conditional(ry * rho * z, s2) * mp.npdf(z), [-mp.inf, mp.inf])

        def second(g, r):
            return mp.quad(lambda z: g(r * z) ** 2 * mp.npdf(z), [-mp.inf, mp.inf])

        values = [expect(f, cond), expect(df, dcond), second(f, rx), second(f, ry), second(df, rx), second(df, ry)]
        root = mp.sqrt(values[2] * values[3])
        return tuple(float(v) for v in values + [root - values[0], root + values[0]])


def assert_close(got, want, scale, rtol, *, sizable=1e-6, what=""):
    """Within rtol of the entry where it is not a cancellation far below its scale (``sizable=None``: never
    relative to the entry), and within rtol·scale always."""
    got, want, scale = (np.broadcast_to(np.asarray(a, dtype=float), np.shape(got)) for a in (got, want, scale))
    error = np.abs(got - want)
    relative = np.zeros(np.shape(got), dtype=bool) if sizable is None else np.abs(want) > sizable * scale
    bound = np.where(relative, rtol * np.abs(want), rtol * scale)
    assert np.all(error <= bound + 1e-300), (what, (error / np.maximum(bound, 1e-300)).max())


def moments_of(act, qx, qy, c, e, f):
    pm = act.pair_moments(qx, qy, c, e, f)
    return pm, act.second_moment(qx), act.second_moment(qy), act.derivative_second_moment(qx), \
        act.derivative_second_moment(qy)


# ------------------------------------------------------------------------------------------------------------
# Closed forms
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", CLOSED)
def test_closed_forms_match_conditional_quadrature(spec):
    act = get_activation(spec)
    qx, qy, c, e, f = pair_arrays()
    pm, ex, ey, dx, dy = moments_of(act, qx, qy, c, e, f)
    cov, dcov, rex, rey, rdx, rdy = conditional_reference(spec, qx, qy, c)
    scale = np.sqrt(rex * rey)
    dscale = np.sqrt(rdx * rdy)
    assert_close(pm.cov, cov, scale, 1e-10, what="cov")
    assert_close(pm.dcov, dcov, dscale, 1e-10, what="dcov")
    for got, want in ((ex, rex), (ey, rey), (dx, rdx), (dy, rdy)):
        assert_close(got, want, want, 1e-10, what="second moment")
    assert np.all(pm.gap_parallel >= 0) and np.all(pm.gap_antiparallel >= 0)
    assert_close(pm.gap_parallel, scale - cov, scale, 1e-10, sizable=None, what="gap_parallel")
    assert_close(pm.gap_antiparallel, scale + cov, scale, 1e-10, sizable=None, what="gap_antiparallel")


EXTREME_PAIRS = [(1.3, 1.7, 0.9999999), (0.45, 3.2, -0.999999), (3.5, 0.05, 0.8)]


@pytest.mark.parametrize("spec", ["gelu", "sin", "cos", "erf"])
def test_closed_forms_match_mpmath_at_extreme_pairs(spec):
    """20 digits at near-(anti)parallel pairs of unequal variances: entries and gaps relative to themselves."""
    act = get_activation(spec)
    qx, qy, c, e, f = pair_arrays(EXTREME_PAIRS)
    pm, ex, ey, dx, dy = moments_of(act, qx, qy, c, e, f)
    cov, dcov, rex, rey, rdx, rdy, below, above = np.array([mp_reference(spec, *p) for p in EXTREME_PAIRS]).T
    scale = np.sqrt(rex * rey)
    assert_close(pm.cov, cov, scale, 1e-10, what="cov")
    assert_close(pm.dcov, dcov, np.sqrt(rdx * rdy), 1e-10, what="dcov")
    assert_close(np.concatenate([ex, ey, dx, dy]), np.concatenate([rex, rey, rdx, rdy]), 1.0, 1e-10, what="moments")
    # Smooth duals may form the gaps by subtraction: accurate to the rounding of their scale (normwise).
    assert_close(pm.gap_parallel, below, scale, 1e-12, sizable=None, what="gap_parallel")
    assert_close(pm.gap_antiparallel, above, scale, 1e-12, sizable=None, what="gap_antiparallel")


def test_closed_forms_match_monte_carlo():
    rng = np.random.default_rng(11)
    samples = 1_000_000
    z1, z2 = rng.standard_normal(samples), rng.standard_normal(samples)
    for spec in CLOSED + ["relu", "leaky_relu(0.1)"]:
        act = get_activation(spec)
        pairs = [(0.7, 2.3, 0.35), (1.3, 1.3, 0.9999999), (0.45, 3.2, -0.999999), (3.5, 0.05, 0.8)]
        if spec not in RELU_FAMILY:  # at q = 0 the kink of ReLU sits exactly at u = 0, where φ' is a convention
            pairs.append((0.0, 1.7, 0.0))
        qx, qy, c, e, f = pair_arrays(pairs)
        pm = act.pair_moments(qx, qy, c, e, f)
        for i, (a, b, rho) in enumerate(pairs):
            u = math.sqrt(a) * z1
            v = math.sqrt(b) * (rho * z1 + math.sqrt((1 - rho) * (1 + rho)) * z2)
            for got, product in ((pm.cov[i], act(u) * act(v)), (pm.dcov[i], act.derivative(u) * act.derivative(v))):
                mean, stderr = product.mean(), product.std(ddof=1) / math.sqrt(samples)
                assert abs(mean - got) <= 4 * stderr + 1e-12 * (abs(got) + 1e-300), (spec, pairs[i], mean, got)


def test_closed_form_pointwise_functions_are_the_intended_ones():
    x = np.linspace(-6, 6, 121)
    for spec in CLOSED + SERIES:
        act = get_activation(spec)
        f, df = POINTWISE[spec]
        # atol: a polynomial near its roots cancels to the rounding of its largest term.
        np.testing.assert_allclose(act(x), f(x), rtol=1e-14, atol=1e-15 * np.abs(f(x)).max())
        np.testing.assert_allclose(act.derivative(x), df(x), rtol=1e-13, atol=1e-15 * np.abs(df(x)).max())


# ------------------------------------------------------------------------------------------------------------
# Series activations
# ------------------------------------------------------------------------------------------------------------

SERIES_PAIRS = PAIRS + [(4.8, 4.8, 0.99999999), (4.8, 0.3, -1.0), (2e-4, 3.0, 0.6), (1e-12, 1e-12, 1.0)]


def test_trapezoid_reference_has_converged():
    """Over the variances the series tests use (q ≤ 5): 100 times below the tolerance they check."""
    qx, qy, c, _, _ = pair_arrays(SERIES_PAIRS)
    for spec in ("tanh", "softplus"):
        f, df = POINTWISE[spec]
        for g in (f, df):
            coarse = trapezoid_pairs(g, g, qx, qy, c)
            fine = trapezoid_pairs(g, g, qx, qy, c, step=0.07, half_width=9.5)
            assert np.abs(coarse - fine).max() < 1e-12 * np.abs(fine).max()




@pytest.mark.parametrize("spec", SERIES)
def test_series_activations_match_trapezoid_reference_to_tol(spec):
    act = get_activation(spec)
    qx, qy, c, e, f = pair_arrays(SERIES_PAIRS)
    pm, ex, ey, dx, dy = moments_of(act, qx, qy, c, e, f)
    cov, dcov, rex, rey, rdx, rdy = series_reference(spec, qx, qy, c)
    tol = act.tol
    assert_kernel_close(pm.cov, cov, np.sqrt(rex * rey), rtol=tol)
    assert_kernel_close(pm.dcov, dcov, np.sqrt(rdx * rdy), rtol=tol)
    for got, want in ((ex, rex), (ey, rey), (dx, rdx), (dy, rdy)):
        assert_kernel_close(got, want, want, rtol=tol)
    assert np.all(pm.gap_parallel >= 0) and np.all(pm.gap_antiparallel >= 0)
    scale = np.sqrt(rex * rey)
    assert_close(pm.gap_parallel, scale - cov, scale, tol, sizable=None, what="gap_parallel")
    assert_close(pm.gap_antiparallel, scale + cov, scale, tol, sizable=None, what="gap_antiparallel")


def test_series_tile_path_matches_reference_and_the_flat_path_bit_for_bit():
    """A 256 × 256 tile of mixed variances (several levels) against the reference on a sample of its entries."""
    rng = np.random.default_rng(3)
    n = 256
    qx = rng.uniform(0.0, 4.0, size=(n, 1)) ** 2 / 4
    qy = rng.uniform(0.0, 4.0, size=(1, n)) ** 2 / 4
    qx[5], qy[0, 7] = 0.0, 0.0
    c = np.clip(rng.uniform(-1.2, 1.2, size=(n, n)), -1, 1)
    for spec in ("tanh", "softplus"):
        act = get_activation(spec)
        pm = act.pair_moments(qx, qy, c, 1 - c, 1 + c)
        assert pm.cov.shape == (n, n) and np.isfinite(pm.cov).all() and np.isfinite(pm.dcov).all()
        rows, cols = rng.integers(0, n, 60), rng.integers(0, n, 60)
        rows[:2], cols[:2] = 5, 7
        cov, dcov, rex, rey, rdx, rdy = series_reference(spec, qx[rows, 0], qy[0, cols], c[rows, cols])
        assert_kernel_close(pm.cov[rows, cols], cov, np.sqrt(rex * rey), rtol=act.tol)
        assert_kernel_close(pm.dcov[rows, cols], dcov, np.sqrt(rdx * rdy), rtol=act.tol)
        # The same pairs through general broadcasting: the same arithmetic, so the same bits.
        sel = c[rows, cols]
        flat = act.pair_moments(qx[rows, 0], qy[0, cols], sel, 1 - sel, 1 + sel)
        assert np.array_equal(flat.cov, pm.cov[rows, cols]) and np.array_equal(flat.dcov, pm.dcov[rows, cols])


def test_series_self_pairs_have_exact_zero_gap_and_results_do_not_depend_on_the_object():
    q = np.array([[0.0], [1e-7], [0.3], [2.2], [4.9]])
    for spec in SERIES:
        act = get_activation(spec)
        one = np.ones((q.size, q.size))
        pm = act.pair_moments(q, q.T, one, one * 0.0, one * 2.0)
        assert np.all(np.diag(pm.gap_parallel) == 0.0)
        # A fresh object calibrates again and computes the second moments alone (no cache): the same bits.
        fresh = get_activation(spec)
        assert np.array_equal(np.diag(pm.cov), fresh.second_moment(q)[:, 0])
        assert np.array_equal(np.diag(pm.dcov), fresh.derivative_second_moment(q.ravel()))
        again = fresh.pair_moments(q[::-1], q.T, one, one * 0.0, one * 2.0)  # rows in another order
        assert np.array_equal(again.cov, pm.cov[::-1]) and np.array_equal(again.dcov, pm.dcov[::-1])


def test_tol_is_met_and_a_looser_tol_uses_fewer_terms():
    qx, qy, c, e, f = pair_arrays(SERIES_PAIRS)
    cov, dcov, rex, rey, rdx, rdy = series_reference("tanh", qx, qy, c)
    loose, tight = A.tanh(tol=1e-6), A.tanh()
    pm = loose.pair_moments(qx, qy, c, e, f)
    assert_kernel_close(pm.cov, cov, np.sqrt(rex * rey), rtol=1e-6)
    assert_kernel_close(pm.dcov, dcov, np.sqrt(rdx * rdy), rtol=1e-6)
    level = loose.dual.level_index(4.0)
    assert sum(loose.dual.level(level).counts) < sum(tight.dual.level(level).counts)


def test_series_past_the_gauss_hermite_range_answers_instead_of_refusing():
    """q = 1e4 once raised "needs more than 4096 Gauss–Hermite nodes"; the conditional quadrature now answers
    (its accuracy against a converged reference: tests/kernels/test_series_every_variance.py)."""
    act = A.tanh()
    assert act.dual.level(act.dual.level_index(1e4)) is None  # past the series: quadrature
    second, derivative = act.second_moment(np.array([1e4])), act.derivative_second_moment(np.array([1e4]))
    # E tanh²(100 Z) = 1 − E sech²(100 Z) ≈ 1 − (2/100)/√(2π); E sech⁴(100 Z) ≈ (4/3)/(100√(2π)).
    np.testing.assert_allclose([1.0 - second[0], derivative[0]], [0.02 / math.sqrt(2 * math.pi),
                                                                  4.0 / 300 / math.sqrt(2 * math.pi)], rtol=1e-3)


# ------------------------------------------------------------------------------------------------------------
# The series machinery against closed forms
# ------------------------------------------------------------------------------------------------------------

def _tile(rng, n=40, q_max=6.0):
    qx = rng.uniform(0.0, q_max, size=(n, 1))
    qy = rng.uniform(0.0, q_max, size=(1, n))
    qx[0] = qy[0, 0] = 0.0
    qx[1] = 1e-9
    c = np.clip(rng.uniform(-1.1, 1.1, size=(n, n)), -1, 1)
    c[2, :5] = [1.0, -1.0, 1 - 1e-12, -1 + 1e-12, 0.0]
    return qx, qy, c, 1 - c, 1 + c


@pytest.mark.parametrize("closed, with_derivative", [("erf", True), ("erf", False), ("gelu", False), (POLY, True)])
def test_series_machinery_reproduces_closed_forms(closed, with_derivative):
    """`custom(φ)` sums the Mehler series of φ; for erf, gelu and a polynomial it must agree with their closed forms."""
    rng = np.random.default_rng(4)
    exact = get_activation(closed)
    f, df = POINTWISE[closed]
    series = A.custom(f, df if with_derivative else None, name="series_check")
    args = _tile(rng)
    want = exact.pair_moments(*args)
    got = series.pair_moments(*args)
    qx, qy = args[0], args[1]
    scale = np.sqrt(exact.second_moment(qx) * exact.second_moment(qy))
    dscale = np.sqrt(exact.derivative_second_moment(qx) * exact.derivative_second_moment(qy))
    assert_kernel_close(got.cov, want.cov, scale, rtol=1e-10)
    assert_kernel_close(got.dcov, want.dcov, dscale, rtol=1e-10)
    assert_kernel_close(series.second_moment(qx), exact.second_moment(qx), exact.second_moment(qx), rtol=1e-10)


def test_hermite_coefficients_of_relu_converge_to_the_exact_ones():
    """The quadrature behind the series on a kink: ReLU's coefficients and its dual kernel.

    Gauss–Hermite converges only at first order on |z| (the even part of ReLU), so the machinery cannot reach
    tol for ReLU (its closed form is used); here the coefficient errors must halve with each doubling of the
    order, and the Mehler sum of the computed coefficients must be the arc-cosine kernel up to those errors.
    """
    count, q = 41, 1.7
    exact = np.zeros(count)
    exact[0], exact[1] = 1 / math.sqrt(2 * math.pi), 0.5
    for k in range(2, count, 2):
        exact[k] = (-1) ** (k // 2 - 1) * math.prod(range(k - 3, 0, -2)) / math.sqrt(2 * math.pi * math.factorial(k))
    exact *= math.sqrt(q)
    errors = []
    for order in (1024, 2048, 4096):
        z, _ = gauss_hermite_rule(order)
        columns = weighted_hermite_columns(order, count)
        x = math.sqrt(q) * z
        plus, minus = np.maximum(x, 0), np.maximum(-x, 0)
        got = np.array([columns[:, k] @ (plus + (-1) ** k * minus) for k in range(count)])
        errors.append(np.abs(got - exact).max())
        assert np.abs(got - exact)[1::2].max() < 1e-14  # the odd part, x, is integrated exactly
    assert 0.4 < errors[1] / errors[0] < 0.6 and 0.4 < errors[2] / errors[1] < 0.6
    rho = np.array([-0.6, -0.1, 0.3, 0.6])
    series = sum(got[k] ** 2 * rho**k for k in range(count))
    relu = get_activation("relu").pair_moments(q, q, rho, 1 - rho, 1 + rho)
    coefficient_error = sum(abs(got[k] ** 2 - exact[k] ** 2) for k in range(count))
    tail = q * 0.6**count  # Σ_{k>40} μ_k² 0.6^k with Σ μ_k² = 1/2
    assert np.all(np.abs(series - relu.cov) <= coefficient_error + tail)


# ------------------------------------------------------------------------------------------------------------
# Whole networks
# ------------------------------------------------------------------------------------------------------------

def mixed_inputs(rng, d=5):
    """Norms over [0.5, 1.5]·√d, a zero row, a scaled copy, a pair 1e-9 apart and a near-antiparallel point."""
    X = rng.standard_normal((8, d))
    X *= rng.uniform(0.5, 1.5, size=(8, 1)) * math.sqrt(d) / np.linalg.norm(X, axis=1, keepdims=True)
    X[2] = 0.0
    X[4] = 0.6 * X[5]
    X[6] = X[7] + 1e-9 * rng.standard_normal(d)
    X[1] = -0.9 * X[0] + 1e-7 * rng.standard_normal(d)
    return X


def reference_network(spec, X, depth, w, b):
    """NNGP and NTK after every layer 1..depth (then the readout), per pair, by the trapezoidal rule."""
    f, df = POINTWISE[spec]
    n, d = X.shape
    i, j = np.triu_indices(n)
    gram = X @ X.T
    sq = np.einsum("ij,ij->i", X, X)
    s_xy, s_xx, s_yy = w * gram[i, j] / d + b, w * sq[i] / d + b, w * sq[j] / d + b
    theta = s_xy.copy()
    out = []
    for _ in range(depth):
        scale = np.sqrt(s_xx * s_yy)
        rho = np.clip(np.where(scale > 0, s_xy / np.where(scale > 0, scale, 1), 0.0), -1, 1)
        e_xy = trapezoid_pairs(f, f, s_xx, s_yy, rho)
        de_xy = trapezoid_pairs(df, df, s_xx, s_yy, rho)
        e_xx, e_yy = trapezoid_moments(f, s_xx), trapezoid_moments(f, s_yy)
        s_xy, s_xx, s_yy = w * e_xy + b, w * e_xx + b, w * e_yy + b
        theta = s_xy + w * de_xy * theta
        out.append((s_xy, theta))
    return i, j, out


def mp_relu_family(a, b_slope, X, depth, w, b):
    """The same recursion in 40 digits for a·min(x,0) + b·max(x,0) = b·r(x) − a·r(−x), r = ReLU:
    E[φφ] = (a² + b²)k(ρ) − 2ab·k(−ρ), E[φ'φ'] = (a² + b²)(π − θ)/2π + 2ab·θ/2π, k the arc-cosine kernel."""
    with mp.workdps(40):
        a, bs, w, b = mp.mpf(a), mp.mpf(b_slope), mp.mpf(w), mp.mpf(b)
        n, d = X.shape
        i, j = np.triu_indices(n)
        rows = [[mp.mpf(float(v)) for v in x] for x in X]

        def dot(p, q):
            return mp.fsum(u * v for u, v in zip(p, q))

        def k(root, rho):
            angle = mp.acos(rho)
            return root * (mp.sin(angle) + (mp.pi - angle) * rho) / (2 * mp.pi)

        out = [[None] * depth for _ in range(len(i))]
        for p, (ii, jj) in enumerate(zip(i, j)):
            sxy = w * dot(rows[ii], rows[jj]) / d + b
            sxx = w * dot(rows[ii], rows[ii]) / d + b
            syy = w * dot(rows[jj], rows[jj]) / d + b
            theta = sxy
            for layer in range(depth):
                root = mp.sqrt(sxx * syy)
                rho = max(min(sxy / root, mp.mpf(1)), mp.mpf(-1)) if root != 0 else mp.mpf(0)
                angle = mp.acos(rho)
                exy = (a * a + bs * bs) * k(root, rho) - 2 * a * bs * k(root, -rho)
                dexy = ((a * a + bs * bs) * (mp.pi - angle) + 2 * a * bs * angle) / (2 * mp.pi)
                sxy, sxx, syy = w * exy + b, w * (a * a + bs * bs) / 2 * sxx + b, w * (a * a + bs * bs) / 2 * syy + b
                theta = sxy + w * dexy * theta
                out[p][layer] = (float(sxy), float(theta))
        return i, j, [(np.array([o[layer][0] for o in out]), np.array([o[layer][1] for o in out]))
                      for layer in range(depth)]


NETWORK_CASES = ["gelu", "sin", "cos", "identity", "polynomial(0.1, 0.7, 0.2)", "erf"] + SERIES + RELU_FAMILY
_SLOPES = {"relu": (0.0, 1.0), "leaky_relu(0.1)": (0.1, 1.0), "abs": (-1.0, 1.0), "abrelu(-0.3, 1.7)": (-0.3, 1.7)}


@pytest.mark.parametrize("spec", NETWORK_CASES)
def test_ntk_and_nngp_match_an_independent_per_pair_recursion(spec):
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    X = mixed_inputs(rng)
    w = float(rng.uniform(0.6, 1.8))
    b = float(rng.choice([0.0, rng.uniform(0.05, 0.5)]))
    if spec in _SLOPES:
        i, j, layers = mp_relu_family(*_SLOPES[spec], X, 5, w, b)
    else:
        i, j, layers = reference_network(spec, X, 5, w, b)
    rtol = 1e-7 if spec in SERIES else 1e-10
    n = len(X)
    for depth in range(1, 6):
        # After `depth` activations the reference has applied depth + 1 Dense layers: the readout's kernels.
        net = MLP(depth=depth, activation=spec, weight_var=w, bias_var=b)
        for kind, which in (("nngp", 0), ("ntk", 1)):
            got = ntkdist.gram_block(X, net=net, kind=kind)
            ref = np.zeros((n, n))
            ref[i, j] = layers[depth - 1][which]
            ref[j, i] = ref[i, j]
            assert np.array_equal(got, got.T)
            diag = np.abs(np.diag(ref))
            assert_kernel_close(got, ref, np.sqrt(np.outer(diag, diag)), rtol=rtol, sizable=1e-6)


@pytest.mark.parametrize("spec", NETWORK_CASES)
def test_gram_is_symmetric_and_positive_semidefinite(spec):
    rng = np.random.default_rng(21)
    X = np.concatenate([mixed_inputs(rng), rng.standard_normal((52, 5)) * rng.uniform(0.5, 1.5, size=(52, 1))])
    K = ntkdist.ntk(X, net=MLP(depth=3, activation=spec, weight_var=1.3, bias_var=0.2))
    assert np.array_equal(K, K.T) and np.isfinite(K).all()
    eig = np.linalg.eigvalsh(K)
    # The data hold a duplicate direction and a pair 1e-9 apart (λ ≈ 0); a series activation perturbs entries
    # by ~tol of their scale, which moves eigenvalues by at most ~n·tol·max|K|.
    floor = 1e-12 if spec not in SERIES else len(X) * 1e-10
    assert eig[0] > -floor * eig[-1]


def test_blocks_of_any_size_assemble_bit_for_bit_for_series_and_closed_forms():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 6)) * rng.uniform(0.3, 1.4, size=(300, 1))
    X[10] = X[11]
    for spec in ("tanh", "gelu"):
        net = MLP(depth=2, activation=spec, bias_var=0.1, weight_var=1.2)
        whole = ntkdist.ntk(X, net=net)
        for block in (37, 256):
            assembled = np.empty_like(whole)
            for i in range(0, len(X), block):
                for j in range(i, len(X), block):
                    rows, cols = slice(i, i + block), slice(j, j + block)
                    part = ntkdist.gram_block(X[rows], None if i == j else X[cols], net=net, kind="ntk")
                    assembled[rows, cols] = part
                    assembled[cols, rows] = part.T
            assert np.array_equal(assembled, whole), (spec, block)


# ------------------------------------------------------------------------------------------------------------
# Zero variances, shapes, protocol
# ------------------------------------------------------------------------------------------------------------

ALL = CLOSED + SERIES + RELU_FAMILY


@pytest.mark.parametrize("spec", ALL)
def test_zero_variances_give_finite_exact_values_without_warnings(spec):
    act = get_activation(spec)
    qx = np.array([[0.0], [0.0], [0.8]])
    qy = np.array([[0.0, 1.9, 0.0]])
    c = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.3, 0.0]])
    with warnings.catch_warnings(), np.errstate(divide="raise", invalid="raise", over="raise"):
        warnings.simplefilter("error")
        pm = act.pair_moments(qx, qy, c, 1 - c, 1 + c)
        values = [pm.cov, pm.dcov, pm.gap_parallel, pm.gap_antiparallel, act.second_moment(qx),
                  act.derivative_second_moment(qy)]
    assert all(np.isfinite(v).all() for v in values)
    # A zero variance pins u to 0: E[φ(0)φ(v)] = φ(0)·E φ(v), E[φ'(0)φ'(v)] = φ'(0)·E φ'(v).
    zero = np.zeros(1)
    if spec not in RELU_FAMILY:  # E φ(v) by the reference quadrature needs a smooth φ
        f, df = POINTWISE[spec]
        mean_f = trapezoid_pairs(lambda x: np.ones_like(x), f, [0.0], [1.9], [0.0])[0]
        mean_df = trapezoid_pairs(lambda x: np.ones_like(x), df, [0.0], [1.9], [0.0])[0]
        tol = 1e-10 if spec not in SERIES else 1e-9
        assert abs(pm.cov[0, 1] - f(zero)[0] * mean_f) <= tol * (abs(f(zero)[0] * mean_f) + 1e-300)
        assert abs(pm.dcov[0, 1] - df(zero)[0] * mean_df) <= tol * abs(df(zero)[0] * mean_df) + 1e-300
        assert pm.cov[0, 0] == pytest.approx(f(zero)[0] ** 2, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("spec", ALL)
def test_a_256_tile_broadcasts_and_self_pairs_are_exactly_parallel(spec):
    act = get_activation(spec)
    rng = np.random.default_rng(8)
    q = rng.uniform(0.0, 2.5, size=256)
    c = np.clip(rng.uniform(-1, 1, size=(256, 256)), -1, 1)
    np.fill_diagonal(c, 1.0)
    e, f = 1 - c, 1 + c
    np.fill_diagonal(e, 0.0)
    pm = act.pair_moments(q[:, None], q[None, :], c, e, f)
    for value in pm:
        assert value.shape == (256, 256) and np.isfinite(value).all()
    assert np.all(pm.gap_parallel >= 0) and np.all(pm.gap_antiparallel >= 0)
    assert np.all(np.diag(pm.gap_parallel) == 0.0)
    assert act.second_moment(q[:, None]).shape == (256, 1)


@pytest.mark.parametrize("spec", ALL + ["tanh(tol=1e-06)", "polynomial(1.0, 2.0, 0.0)"])
def test_spec_strings_round_trip(spec):
    act = get_activation(spec)
    again = get_activation(act.describe())
    assert again == act and hash(again) == hash(act) and again.describe() == act.describe()
    assert MLP(depth=1, activation=act.describe()).activation == act


def test_public_constructors_match_spec_strings():
    assert A.leaky_relu(0.1) == get_activation("leaky_relu(0.1)")
    assert A.abs() == get_activation("abs") and A.relu() == get_activation("relu")
    assert A.tanh(tol=1e-6).describe() == "tanh(tol=1e-06)"
    assert A.polynomial(1, 2, 0).describe() == "polynomial(1.0, 2.0)"
    for name in ("gelu", "sigmoid", "softplus", "sin", "cos", "identity", "erf"):
        assert getattr(A, name)() == get_activation(name)


def test_custom_activations_round_trip_by_name_in_their_scope():
    def swish(x):
        return x * expit(x)

    with A.ActivationScope() as scope:
        act = A.custom(swish)
        assert get_activation("custom:swish") is act
    assert act.describe() == "custom:swish"
    assert get_activation("custom:swish", scope=scope) is act
    loose = get_activation("custom:swish(tol=1e-06)", scope=scope)
    assert loose.tol == 1e-6 and loose.describe() == "custom:swish(tol=1e-06)" and loose != act
    x = np.linspace(-4, 4, 9)
    # Without a derivative: the eighth-order central difference.
    np.testing.assert_allclose(act.derivative(x), expit(x) * (1 + x * expit(-x)), rtol=1e-11, atol=1e-13)
    with pytest.raises(ValueError, match="activation: custom needs name="):
        A.custom(lambda x: x * x)
    with pytest.raises(ValueError, match="activation: custom needs name="):
        A.custom(np.tanh, name="tanh")
    with pytest.raises(ValueError, match="activation: unknown custom activation 'custom:nope'"):
        get_activation("custom:nope")


def test_polynomial_degree_marks_polynomials_only():
    assert A.identity().polynomial_degree == 1
    assert A.polynomial(0.3, -1.0, 0.5, 0.25).polynomial_degree == 3
    assert A.polynomial(2.0, 1.0, 0.0, 0.0).polynomial_degree == 1
    assert A.polynomial(2.0).polynomial_degree == 0
    for name in ("relu", "abs", "erf", "gelu", "tanh", "sigmoid", "softplus", "sin", "cos"):
        assert get_activation(name).polynomial_degree is None
    assert A.custom(np.sin, name="my_sin").polynomial_degree is None


@pytest.mark.parametrize("spec, message", [
    ("swish", "activation: unknown activation 'swish'"),
    ("tanh(x)", r"activation: argument 'x' of 'tanh\(x\)' is not a number"),
    ("sin(1)", "activation: sin does not take the arguments"),
    ("tanh(width=3)", "activation: tanh does not take the arguments"),
    ("tanh(tol=0)", "activation: tanh tol must lie in"),
    ("polynomial()", "activation: polynomial needs finite coefficients"),
    ("polynomial(0, 0)", "activation: polynomial needs finite coefficients"),
    ("polynomial(1, inf)", "activation: polynomial needs finite coefficients"),
    ("leaky_relu(0.1", "activation: cannot parse"),
])
def test_bad_specs_raise_a_value_error_naming_activation(spec, message):
    with pytest.raises(ValueError, match=message):
        get_activation(spec)


def test_series_activations_pickle_without_their_caches_and_compute_the_same():
    act = A.tanh()
    q = np.array([[0.4], [1.7]])
    c = np.array([[0.3, -0.9], [0.99, 1.0]])
    before = act.pair_moments(q, q.T, c, 1 - c, 1 + c)
    blob = pickle.dumps(act)
    assert len(blob) < 10_000  # tables and calibration stay behind
    again = pickle.loads(blob)
    assert again == act and isinstance(again, MehlerActivation)
    after = again.pair_moments(q, q.T, c, 1 - c, 1 + c)
    assert all(np.array_equal(x, y) for x, y in zip(before, after))


def _module_level_swish(x):
    return x * expit(x)


def test_custom_activations_pickle_with_their_function():
    act = A.custom(_module_level_swish, name="pickled_swish", tol=1e-8)
    again = pickle.loads(pickle.dumps(act))
    x = np.linspace(-3, 3, 7)
    assert again == act and np.array_equal(again.derivative(x), act.derivative(x))
    q = np.array([[0.5], [2.0]])
    c = np.array([[0.2, 1.0], [-0.7, 0.4]])
    assert np.array_equal(again.pair_moments(q, q.T, c, 1 - c, 1 + c).cov, act.pair_moments(q, q.T, c, 1 - c, 1 + c).cov)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ALL)
def test_cupy_inputs_give_cupy_results_equal_to_numpy(spec):
    import cupy

    rng = np.random.default_rng(9)
    X = rng.standard_normal((300, 7)) * rng.uniform(0.5, 1.5, size=(300, 1))
    net = MLP(depth=3, activation=spec, bias_var=0.2, weight_var=1.4)
    on_gpu = ntkdist.ntk(cupy.asarray(X), net=net)
    assert isinstance(on_gpu, cupy.ndarray)
    rtol = 1e-9 if spec in SERIES else 1e-12
    np.testing.assert_allclose(on_gpu.get(), ntkdist.ntk(X, net=net), rtol=rtol, atol=1e-14)


def test_custom_with_tol_keeps_what_is_known_about_polynomials():
    """Another tol is the same φ: its polynomial facts, and so the positivity verdict, must not change."""
    from ntkdist.theory import ntk_positivity

    smooth = A.custom(np.sin, name="declared_sin", non_polynomial=True)
    square = A.custom(lambda x: x * x, derivative=lambda x: 2 * x, name="declared_square", polynomial_degree=2)
    unknown = A.custom(np.sin, name="undeclared_sin")
    for act in (smooth, square, unknown):
        loose = act.with_tol(1e-6)
        assert loose.tol == 1e-6
        assert (loose.polynomial_degree, loose.polynomial_known) == (act.polynomial_degree, act.polynomial_known)
    X = np.random.default_rng(0).standard_normal((12, 3))
    verdict = ntk_positivity(X, MLP(depth=2, activation=smooth.with_tol(1e-6), bias_var=0.1))
    assert verdict.guaranteed, verdict.reason
    assert ntk_positivity(X, MLP(depth=2, activation=smooth, bias_var=0.1)).status == verdict.status


def test_custom_activations_are_not_visible_by_name_outside_their_scope():
    """No process-wide table: a name made in one place never resolves somewhere else."""
    A.custom(np.sin, name="leaked_sin", non_polynomial=True)
    with pytest.raises(ValueError, match="unknown custom activation 'custom:leaked_sin'.*ActivationScope"):
        get_activation("custom:leaked_sin")
    with A.ActivationScope() as outer:
        first = A.custom(np.sin, name="wave", non_polynomial=True)
        with A.ActivationScope() as inner:
            assert get_activation("custom:wave") is first  # an inner scope sees the outer one's names
            second = A.custom(np.cos, name="wave", non_polynomial=True)
            assert get_activation("custom:wave") is second
        assert get_activation("custom:wave") is first  # … and adds to itself only
    assert outer.get("wave") is first and inner.get("wave") is second
    with pytest.raises(ValueError, match="unknown custom activation"):
        get_activation("custom:wave")


def test_two_configs_in_one_process_keep_their_own_custom_activations():
    from ntkdist.config import Config
    from ntkdist.errors import ConfigError

    raw = {"run": {"name": "a"}, "data": {"source": "sphere", "n": 10, "dim": 3},
           "network": {"depth": 2, "activation": "custom:bump"}}
    with A.ActivationScope():
        first = A.custom(lambda x: np.exp(-x * x), name="bump", non_polynomial=True)
        one = Config.from_dict(raw)
    with A.ActivationScope():
        second = A.custom(lambda x: 2.0 * np.exp(-x * x), name="bump", non_polynomial=True)
        two = Config.from_dict(raw)
    assert one.net.activation is first and two.net.activation is second
    X = np.random.default_rng(1).standard_normal((6, 3))
    assert not np.allclose(ntkdist.ntk(X, net=one.net), ntkdist.ntk(X, net=two.net))
    # Explicitly, without a with block; and nowhere at all.
    assert Config.from_dict(raw, activations=[second]).net.activation is second
    with pytest.raises(ConfigError, match=r"\[network\] activation: unknown custom activation 'custom:bump'"):
        Config.from_dict(raw)
