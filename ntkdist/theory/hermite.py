"""Hermite coefficients of activations: the building block of every power series in `ntkdist.theory`.

Convention (Murray, Jin, Bowman, Montúfar 2023, arXiv 2211.07844, §2 and App. B): the
normalised probabilists' Hermite polynomials

    h_k(z) = He_k(z)/√(k!),   He_k(z) = (−1)^k e^{z²/2} (d/dz)^k e^{−z²/2},

orthonormal under Z ~ N(0, 1), and μ_k(ψ) = E[ψ(Z) h_k(Z)]. For a pre-activation of variance q the coefficients
that matter are those of ψ(z) = φ(√q·z): by Mehler's formula the dual activation (Daniely, Frostig, Singer 2016,
arXiv 1602.05897, §4) is

    E[φ(u)φ(v)] = Σ_k μ_k(ψ)² c^k,   (u, v) ~ N(0, q·[[1, c], [c, 1]]),

and Parseval gives Σ_k μ_k(ψ)² = E φ(u)². For absolutely continuous φ with φ' ∈ L²(γ) (Murray's Assumption 3),
μ_k(ψ') = √(k+1) μ_{k+1}(ψ) (Murray Lemma B.2 / the proof of Theorem 3.1), with ψ'(z) = √q φ'(√q z).

`hermite_coefficients` is exact (closed form, to rounding) for the activations with known expansions and falls
back to a composite Gauss–Legendre quadrature on [−22, 22] otherwise; see its docstring for the accuracy.

The mathematics, with its conventions, errata and tests: docs/theory.md §2.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.special import gammaln

from ntkdist.kernels import ABReLU, Activation, Cos, Erf, Gelu, Sin, get_activation
from ntkdist.kernels.gauss_hermite import hermite_recurrence

__all__ = [
    "hermite_coefficients",
    "second_moment",
    "dual_coefficients",
    "is_exact",
]

_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: Half-width of the quadrature interval in z: |ψ(z)| e^{−z²/4} beyond it is below e^{−121}·|ψ(z)|, and by
#: Cramér's inequality |h_k(z)| e^{−z²/4} ≤ 1.0865 for every k, so the neglected mass is that small for all k.
_HALF_WIDTH = 22.0
#: Gauss–Legendre nodes per panel.
_PANEL_NODES = 24


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

def _h_at_zero(order: int) -> np.ndarray:
    """h_k(0) for k = 0..order: h_{2m+1}(0) = 0, h_{2m}(0) = −√((2m−1)/(2m)) h_{2m−2}(0), h_0(0) = 1."""
    out = np.zeros(order + 1)
    out[0] = 1.0
    for k in range(2, order + 1, 2):
        out[k] = -math.sqrt((k - 1) / k) * out[k - 2]
    return out


def _abs_coefficients(order: int) -> np.ndarray:
    """μ_k(|z|): √(2/π) at k = 0, 2·μ_k(ReLU) = 2 h_{k−2}(0)/√(2π k(k−1)) at even k ≥ 2, 0 at odd k.

    From |z| = 2·ReLU(z) − z and the ReLU coefficients (Nguyen et al. 2021, Sec. 2: μ_k = (−1)^{k/2−1}(k−3)!!/√(2π k!) for even k ≥ 2,
    written through the stable recursion of h_{k−2}(0)).
    """
    out = np.zeros(order + 1)
    out[0] = math.sqrt(2.0 / math.pi)
    if order >= 2:
        h0 = _h_at_zero(order)
        k = np.arange(2, order + 1, 2, dtype=float)
        out[2::2] = 2.0 * h0[0:order - 1:2] / (_SQRT_2PI * np.sqrt(k * (k - 1.0)))
    return out


def _step_coefficients(order: int) -> np.ndarray:
    """μ_k(1{z > 0}): 1/2 at k = 0, h_{k−1}(0)/√(2π k) at odd k, 0 at even k ≥ 2."""
    out = np.zeros(order + 1)
    out[0] = 0.5
    if order >= 1:
        h0 = _h_at_zero(order)
        k = np.arange(1, order + 1, 2, dtype=float)
        out[1::2] = h0[0:order:2] / (_SQRT_2PI * np.sqrt(k))
    return out


def _gaussian_coefficients(order: int, v: float) -> np.ndarray:
    """μ_k(e^{−v z²}) = (1+2v)^{−1/2} (−1)^m √((2m)!)/m! (v/(1+2v))^m at k = 2m, 0 at odd k.

    From the generating function E[e^{−vZ²} e^{tZ − t²/2}] = (1+2v)^{−1/2} exp(−t² v/(1+2v)).
    """
    out = np.zeros(order + 1)
    x = v / (1.0 + 2.0 * v)
    m = np.arange(0, order // 2 + 1, dtype=float)
    # log(√((2m)!)/m! · x^m), exact to a few ulps of the log for the orders used here.
    with np.errstate(divide="ignore"):
        log_mag = 0.5 * gammaln(2.0 * m + 1.0) - gammaln(m + 1.0) + m * (math.log(x) if x > 0 else -np.inf)
    mag = np.exp(log_mag) if x > 0 else (m == 0).astype(float)
    sign = np.where(m % 2 == 0, 1.0, -1.0)
    out[0::2] = sign * mag / math.sqrt(1.0 + 2.0 * v)
    return out


def _erf_coefficients(order: int, v: float) -> np.ndarray:
    """μ_k(erf(√v z)): from erf'(x) = (2/√π) e^{−x²} and μ_{k+1}(ψ) = μ_k(ψ')/√(k+1).

    Only odd k are non-zero: μ_{2m+1} = (2√v/√π)(1+2v)^{−1/2}(−1)^m √((2m)!)/m! (v/(1+2v))^m / √(2m+1),
    so μ_{2m+1}² = (2/π)·(2m)!/(4^m (m!)² (2m+1))·s^{2m+1}, s = 2v/(1+2v): the Taylor series of
    (2/π) arcsin(s c) (Williams 1997), as Mehler's formula requires.
    """
    out = np.zeros(order + 1)
    if order >= 1:
        deriv = _gaussian_coefficients(order - 1, v) * (2.0 * math.sqrt(v) / math.sqrt(math.pi))
        k = np.arange(1, order + 1, dtype=float)
        out[1:] = deriv / np.sqrt(k)
    return out


def _sin_coefficients(order: int, v: float, *, derivative: bool) -> np.ndarray:
    """μ_k(sin(√v z)) = (−1)^{(k−1)/2} v^{k/2} e^{−v/2}/√(k!) (odd k); for the derivative cos, even k.

    From E[e^{iaZ} He_k(Z)] = (ia)^k e^{−a²/2}.
    """
    k = np.arange(order + 1, dtype=float)
    with np.errstate(divide="ignore"):
        log_mag = 0.5 * k * (math.log(v) if v > 0 else -np.inf) - 0.5 * v - 0.5 * gammaln(k + 1.0)
    mag = np.exp(log_mag) if v > 0 else (k == 0).astype(float)
    ki = np.arange(order + 1)
    if derivative:  # cos
        return np.where(ki % 2 == 0, np.where(ki % 4 == 0, 1.0, -1.0) * mag, 0.0)
    return np.where(ki % 2 == 1, np.where(ki % 4 == 1, 1.0, -1.0) * mag, 0.0)


def _gelu_coefficients(order: int, v: float) -> np.ndarray:
    """μ_k of ψ(z) = √v z Φ(√v z) (exact GELU): Φ(√v z) = (1 + erf(√(v/2) z))/2, then z·h_k = √(k+1) h_{k+1} + √k h_{k−1}."""
    cdf = 0.5 * _erf_coefficients(order + 1, 0.5 * v)
    cdf[0] += 0.5
    out = np.zeros(order + 1)
    j = np.arange(order + 1, dtype=float)
    out[1:] += cdf[:order] * np.sqrt(j[1:])           # a_{j−1} √j
    out += cdf[1:order + 2] * np.sqrt(j + 1.0)        # a_{j+1} √(j+1)
    return math.sqrt(v) * out


def activation_polynomial_degree(activation) -> int | None:
    """The degree q if φ is a polynomial, None if it is not or nobody said (the one reader of the degree).

    Reads ``activation.polynomial_degree`` (None for non-polynomial activations, the `Activation` default);
    ABReLU with equal slopes is the linear map a·x (degree 1) whatever it says. Anything but a non-negative
    integer counts as not known to be a polynomial.
    """
    if isinstance(activation, ABReLU) and activation.a == activation.b:
        return 1
    degree = getattr(activation, "polynomial_degree", None)
    if degree is None or isinstance(degree, bool):
        return None
    try:
        degree = int(degree)
    except (TypeError, ValueError):
        return None
    return degree if degree >= 0 else None


def _gauss_hermite_exact(fn: Callable, degree: int, order: int, v: float) -> np.ndarray:
    """Coefficients of a polynomial of known degree: Gauss–Hermite with degree + 1 nodes is exact for deg + k ≤ 2·deg + 1."""
    n = max(degree + 1, 1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    weights = weights / _SQRT_2PI
    values = np.asarray(fn(math.sqrt(v) * nodes), dtype=float) * weights
    out = np.zeros(order + 1)
    top = min(order, degree)
    out[:top + 1] = _project(values, nodes, top, np.zeros_like(nodes))
    return out


def _project(weighted, z, order: int, log_h0) -> np.ndarray:
    """Σ_i weighted_i·h_k(z_i)·e^{log_h0_i} for k = 0..order: the normalised probabilists' Hermite functions h_k
    by the one three-term recurrence, `ntkdist.kernels.gauss_hermite.hermite_recurrence` (rescaled where h_k would
    overflow), times a per-node factor e^{log_h0} (1, or the damping e^{−z²/4} that keeps the product bounded on
    wide node sets, Cramér's bound 1.0865)."""
    out = np.empty(order + 1)

    def column(k, values):
        out[k] = weighted @ values

    hermite_recurrence(z, order + 1, columns=column, log_weight=log_h0)
    return out


def _quadrature_nodes(order: int, v: float):
    """Composite Gauss–Legendre nodes and weights in z on [−22, 22] (see `hermite_coefficients`).

    Panels are aligned, in x = √v·z, to a grid that contains every integer multiple of 1/m, so kinks of φ at
    0, ±1, ±1/2, … fall on panel ends; panel widths are at most 0.25 in x and min(0.25, 6/√(order+1)) in z
    (h_k oscillates with wavelength ≈ 2π/√k).
    """
    root_v = math.sqrt(v)
    z_width = min(0.25, 6.0 / math.sqrt(order + 1.0))
    x_width = min(0.25, root_v * z_width)
    m = math.ceil(1.0 / x_width)
    half = math.ceil(_HALF_WIDTH * root_v * m)
    edges = np.arange(-half, half + 1, dtype=float) / (m * root_v)
    gl_x, gl_w = np.polynomial.legendre.leggauss(_PANEL_NODES)
    lo, hi = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (hi - lo) * gl_x[None, :] + 0.5 * (hi + lo)).ravel()
    weights = (0.5 * (hi - lo) * gl_w[None, :]).ravel()
    return nodes, weights


def _quadrature_coefficients(fn: Callable, order: int, v: float) -> np.ndarray:
    z, w = _quadrature_nodes(order, v)
    with np.errstate(all="ignore"):
        values = np.asarray(fn(math.sqrt(v) * z), dtype=float)
    if values.shape != z.shape:
        values = np.broadcast_to(values, z.shape).astype(float)
    log_damping = -0.25 * z * z
    weighted = values * np.exp(log_damping) * w / _SQRT_2PI
    weighted = np.where(np.isfinite(weighted), weighted, 0.0)
    if not np.all(np.isfinite(values[np.abs(z) < 12.0])):
        raise ValueError("activation: returned NaN or inf at a finite argument; cannot expand it in Hermite polynomials")
    return _project(weighted, z, order, log_damping)


def second_moment(activation, *, variance: float = 1.0) -> float:
    """E φ(√variance·Z)², by the same composite Gauss–Legendre rule as the numerical coefficients.

    Independent of ``activation.second_moment`` (which for Mehler-series activations is accurate only to their
    ``tol``); relative error ~1e-16 for the activations `hermite_coefficients` expands numerically. It is the
    Parseval total Σ_k μ_k² against which tails of numerical coefficients are measured.
    """
    act = _resolve(activation)
    z, w = _quadrature_nodes(0, float(variance))
    with np.errstate(all="ignore"):
        values = np.asarray(act(math.sqrt(float(variance)) * z), dtype=float)
    weighted = values * values * np.exp(-0.5 * z * z) * w / _SQRT_2PI
    return math.fsum(np.where(np.isfinite(weighted), weighted, 0.0))


def _resolve(activation):
    if isinstance(activation, (Activation, str)):
        if isinstance(activation, str) and activation.strip().lower() in ("step", "heaviside"):
            return "step"
        return get_activation(activation)
    if callable(activation):
        return activation
    raise TypeError(f"activation: expected an Activation, a spec string or a callable, got {type(activation).__name__}")


def _closed_form(act, order: int, v: float, derivative: bool):
    """Exact coefficients where a closed form is known, else None."""
    if act == "step":
        if derivative:
            raise ValueError("activation: the step function has no L² derivative (it is a Dirac delta)")
        return _step_coefficients(order)
    if isinstance(act, ABReLU):
        a, b = act.a, act.b
        if derivative:  # φ' = a + (b − a)·1{x > 0}, invariant under scaling of x
            out = (b - a) * _step_coefficients(order)
            out[0] += a
            return out
        alpha, beta = 0.5 * (a + b), 0.5 * (b - a)
        out = beta * _abs_coefficients(order)
        if order >= 1:
            out[1] += alpha
        return math.sqrt(v) * out
    if isinstance(act, Erf):
        if derivative:
            return (2.0 / math.sqrt(math.pi)) * _gaussian_coefficients(order, v)
        return _erf_coefficients(order, v)
    if isinstance(act, Sin):
        return _sin_coefficients(order, v, derivative=derivative)
    if isinstance(act, Cos):
        if derivative:  # −sin
            return -_sin_coefficients(order, v, derivative=False)
        return _sin_coefficients(order, v, derivative=True)
    if isinstance(act, Gelu):
        if derivative:
            return None
        return _gelu_coefficients(order, v)
    degree = activation_polynomial_degree(act) if isinstance(act, Activation) else None
    if degree is not None:
        if derivative:
            return _gauss_hermite_exact(act.derivative, max(degree - 1, 0), order, v)
        return _gauss_hermite_exact(act, degree, order, v)
    return None


def is_exact(activation, *, derivative: bool = False) -> bool:
    """Whether `hermite_coefficients` uses a closed form (True) or quadrature (False) for this activation."""
    act = _resolve(activation)
    return _closed_form(act, 0, 1.0, derivative) is not None


def hermite_coefficients(activation, order: int, *, variance: float = 1.0, derivative: bool = False) -> np.ndarray:
    """μ_k, k = 0..order, of ψ(z) = φ(√variance·z) in normalised probabilists' Hermite polynomials.

    Murray et al. 2023 (arXiv 2211.07844) §2: h_k = He_k/√(k!), μ_k(ψ) = E_{Z~N(0,1)}[ψ(Z) h_k(Z)].

    Parameters
    ----------
    activation : Activation, spec string, or callable
        An `ntkdist.kernels` activation (or its spec, e.g. ``"relu"``, ``"leaky_relu(0.1)"``), the extra spec
        ``"step"`` (the Heaviside function 1{x > 0}), or any vectorised callable φ(x).
    order : int
        Highest degree (≥ 0).
    variance : float
        q > 0: the coefficients are those of z ↦ φ(√q·z), i.e. of the activation applied to a N(0, q)
        pre-activation.
    derivative : bool
        Expand z ↦ φ'(√q·z) instead (``activation.derivative``; for ABReLU the step function, exactly). For
        absolutely continuous φ this equals √((k+1)/q)·μ_{k+1}(ψ) (Murray's Lemma), which the tests check.

    Returns
    -------
    (order + 1,) float64 array.

    Accuracy
    --------
    *Exact* (closed forms, relative error a few ulps of each coefficient, any order):
    ABReLU family (relu, leaky_relu, abs; via |z| = 2 ReLU(z) − z), step, erf (odd
    coefficients from the Gaussian e^{−x²}, whose squares are the Taylor coefficients of Williams' arcsin
    kernel), sin (from E[e^{iaZ}He_k] = (ia)^k e^{−a²/2}), exact GELU x·Φ(x) (erf expansion times z), and
    polynomials (any activation with an integer ``polynomial_degree``: Gauss–Hermite with degree + 1 nodes,
    exact in exact arithmetic, zero above the degree). Name-based closed forms are used only after checking
    the activation pointwise against the formula.

    *Numerical* (everything else): composite Gauss–Legendre (24 nodes per panel) on z ∈ [−22, 22] of
    ψ(z)e^{−z²/4} against h_k(z)e^{−z²/4} from the three-term recurrence. For φ analytic in a strip around the
    real axis (tanh, sigmoid, softplus, gelu, ...), or with kinks at multiples of 1/m (the panel grid, which
    contains 0 and the integers), the absolute error is ≲ 1e-16·(E ψ²)^{1/2}·(a few) uniformly in k, measured
    against 25-digit mpmath quadrature up to k = 300 (tests/theory/test_hermite.py; measured ≤ 1.3e-16); relative accuracy of a
    coefficient is therefore lost only once |μ_k| itself falls towards 1e-15. Kinks elsewhere converge
    algebraically. Cost: O(order × nodes), nodes ≈ 4000 at variance 1.
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"order: must be an integer ≥ 0, got {order!r}")
    order = int(order)
    v = float(variance)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"variance: must be a finite number > 0, got {variance!r}")
    act = _resolve(activation)
    exact = _closed_form(act, order, v, derivative)
    if exact is not None:
        return np.asarray(exact, dtype=float)
    fn = act.derivative if (derivative and isinstance(act, Activation)) else act
    if derivative and not isinstance(act, Activation):
        raise ValueError("derivative: a plain callable has no derivative; wrap it in an Activation")
    return _quadrature_coefficients(fn, order, v)


def dual_coefficients(activation, order: int, *, variance: float = 1.0) -> np.ndarray:
    """Taylor coefficients μ_k(ψ)², k = 0..order, of the dual activation c ↦ E[φ(u)φ(v)].

    Daniely, Frostig, Singer 2016 (arXiv 1602.05897) §4, for (u, v) ~ N(0, q[[1, c], [c, 1]]), q = variance:
    E[φ(u)φ(v)] = Σ_k μ_k(ψ)² c^k (Mehler), non-negative coefficients summing to E φ(u)². This is
    g(c) of the composition form (`ntkdist.theory.power_series`) up to the factor σ_w² and the bias.
    """
    mu = hermite_coefficients(activation, order, variance=variance)
    return mu * mu
