"""Activations and the Gaussian expectations (dual activations) the kernel recursions need.

For a pre-activation pair (u, v) ~ N(0, [[q_x, ρ√(q_x q_y)], [ρ√(q_x q_y), q_y]]) a layer of the NNGP/NTK
recursion (Jacot et al. 2018; Lee et al. 2019, neural-tangents `stax`) needs

* ``second_moment(q)``                 E[φ(u)²] for u ~ N(0, q)               (the diagonal of the NNGP)
* ``derivative_second_moment(q)``      E[φ'(u)²]                              (the diagonal of Σ̇)
* ``pair_moments(qx, qy, c, e, f)``    `PairMoments` of (u, v)

The correlation enters three times: as ``c = ρ``, ``e = 1 − ρ`` and ``f = 1 + ρ``. Near-parallel (and
near-antiparallel) pairs are where the smallest eigenvalue lives, and there 1 ∓ ρ computed from ρ has lost half
its digits before the angle θ = arccos ρ is even taken. Carrying ``e`` and ``f`` from the inputs through every
layer keeps the angle accurate to the last bits at both ends: θ = 2·atan2(√e, √f).

The activation returns the two Cauchy–Schwarz gaps √(E φ(u)² E φ(v)²) ∓ E[φ(u)φ(v)] ≥ 0, formed without
cancellation where its dual kernel has a kink (ReLU-like activations); the next Dense layer turns them into the
next ``e`` and ``f`` (see ``ntkdist.kernels.analytic``). Smooth activations have smooth dual kernels, in which
an absolute rounding error of ρ stays an absolute error of the same size; they may form the gaps by subtraction.

Everything here is a pure function of arrays and runs on the array module of its arguments (NumPy or CuPy).
"""

from __future__ import annotations

import abc
import math
import re
from typing import NamedTuple

import numpy as np

from .activation_scope import ActivationScope, current_scope
from ._xp import array_module
from .hermite_dual import MehlerDual

_PI = math.pi
_TWO_PI = 2.0 * math.pi
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class PairMoments(NamedTuple):
    """Expectations over a correlated Gaussian pair (u, v), elementwise over a tile of pairs."""

    cov: object
    """E[φ(u)φ(v)]"""
    dcov: object
    """E[φ'(u)φ'(v)]"""
    gap_parallel: object
    """√(E φ(u)² E φ(v)²) − E[φ(u)φ(v)] ≥ 0"""
    gap_antiparallel: object
    """√(E φ(u)² E φ(v)²) + E[φ(u)φ(v)] ≥ 0"""


class Activation(abc.ABC):
    """A pointwise non-linearity φ with the Gaussian expectations of the NNGP/NTK recursion.

    Subclasses implement the pointwise functions and the three expectations; all take arrays and broadcast.
    """

    #: Registry name (``MLP(activation="relu")``) and how the activation prints in reports and attrs.
    name: str = ""
    #: Degree of φ if it is a polynomial (identity: 1), else None. The theory code relies on it: the NTK of a
    #: non-polynomial activation is strictly positive definite on distinct inputs (Jacot et al. 2018; Carvalho et
    #: al. 2024), that of a polynomial of degree p has rank bounded in terms of p and the input dimension.
    polynomial_degree: int | None = None
    #: False when nobody knows whether φ is a polynomial (a user callable that did not say): then
    #: ``polynomial_degree = None`` does not mean "not a polynomial" (strict positivity needs one that is not).
    polynomial_known: bool = True

    @abc.abstractmethod
    def __call__(self, x):
        """φ(x), elementwise."""

    @abc.abstractmethod
    def derivative(self, x):
        """φ'(x), elementwise (the a.e. derivative; the value at kinks is the convention of JAX)."""

    @abc.abstractmethod
    def second_moment(self, q):
        """E[φ(u)²] for u ~ N(0, q)."""

    @abc.abstractmethod
    def derivative_second_moment(self, q):
        """E[φ'(u)²] for u ~ N(0, q)."""

    @abc.abstractmethod
    def pair_moments(self, qx, qy, c, e, f) -> PairMoments:
        """Expectations over the correlated pair (u, v).

        Parameters
        ----------
        qx, qy : arrays broadcastable against ``c``
            Variances of u and v (≥ 0).
        c, e, f : arrays
            Correlation ρ of (u, v), ``1 − ρ`` and ``1 + ρ``, each accurate to relative rounding.
        """

    def describe(self) -> str:
        """A short spec string that `get_activation` accepts back (used in configs and store attrs)."""
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other) -> bool:
        return isinstance(other, Activation) and self.describe() == other.describe()

    def __hash__(self) -> int:
        return hash(self.describe())


def correlation_angle(e, f):
    """θ = arccos ρ and π − θ from 1 − ρ and 1 + ρ, both accurate to relative rounding.

    sin²(θ/2) = (1 − ρ)/2 and cos²(θ/2) = (1 + ρ)/2, so θ = 2·atan2(√e, √f) is well conditioned at both ends,
    where arccos ρ would return only half the digits of θ (near 0) or of π − θ (near π).
    """
    xp = array_module(e, f)
    root_e, root_f = xp.sqrt(e), xp.sqrt(f)
    return 2.0 * xp.arctan2(root_e, root_f), 2.0 * xp.arctan2(root_f, root_e)


def theta_minus_sin(theta):
    """θ − sin θ, with a Taylor series below θ = 0.5 where the subtraction would cancel."""
    xp = array_module(theta)
    t2 = theta * theta
    # θ³/6 − θ⁵/5! + θ⁷/7! − …, Horner form; the omitted term at θ = 0.5 is below 1e-17 of the sum.
    series = theta * t2 * (
        1.0 / 6.0
        - t2 * (1.0 / 120.0
                - t2 * (1.0 / 5040.0
                        - t2 * (1.0 / 362880.0
                                - t2 * (1.0 / 39916800.0
                                        - t2 * (1.0 / 6227020800.0
                                                - t2 / 1307674368000.0)))))
    )
    return xp.where(theta < 0.5, series, theta - xp.sin(theta))


class ABReLU(Activation):
    """φ(x) = a·min(x, 0) + b·max(x, 0): ReLU (0, 1), leaky ReLU (slope, 1), |x| (−1, 1).

    Closed forms from the arc-cosine kernel of degree 1 (Cho & Saul 2009), through φ(x) = αx + β|x| with
    α = (a + b)/2, β = (b − a)/2 (the cross terms E[u|v|] vanish by symmetry). With J(θ) = sin θ + (π − θ)cos θ:

        E[φ(u)φ(v)]   = √(q_x q_y)·(ab·cos θ + (2β²/π)·J(θ))
        E[φ'(u)φ'(v)] = ab + (2β²/π)·(π − θ)
        E φ(u)²       = q·(a² + b²)/2

    The Cauchy–Schwarz gaps come from the even part's kernel A(θ) = 2 sin θ + (π − 2θ)cos θ = A(π − θ), written
    so that no term cancels near θ = 0 or θ = π. φ'(0) := a (ReLU: 0, as JAX's relu; this only matters for the
    finite-width network at inputs exactly on a kink).
    """

    def __init__(self, a: float = 0.0, b: float = 1.0):
        a, b = float(a), float(b)
        if not (math.isfinite(a) and math.isfinite(b)) or (a == 0.0 and b == 0.0):
            raise ValueError(f"activation: abrelu needs finite slopes, not both zero, got a={a}, b={b}")
        self.a, self.b = a, b
        self._ab = a * b
        self._alpha2 = (0.5 * (a + b)) ** 2
        self._beta2 = (0.5 * (b - a)) ** 2
        self._second = 0.5 * (a * a + b * b)

    @property
    def name(self) -> str:  # type: ignore[override]
        return _ABRELU_NAMES.get((self.a, self.b), "abrelu")

    @property
    def polynomial_degree(self) -> int | None:  # type: ignore[override]
        """1 when a = b (φ is the linear map a·x), else None (not a polynomial)."""
        return 1 if self.a == self.b else None

    def describe(self) -> str:
        if (self.a, self.b) in _ABRELU_NAMES:
            return self.name
        if self.b == 1.0:
            return f"leaky_relu({self.a!r})"
        return f"abrelu({self.a!r}, {self.b!r})"

    def __repr__(self) -> str:
        return f"ABReLU(a={self.a!r}, b={self.b!r})"

    def __call__(self, x):
        xp = array_module(x)
        return self.a * xp.minimum(x, 0.0) + self.b * xp.maximum(x, 0.0)

    def derivative(self, x):
        xp = array_module(x)
        return xp.where(x > 0, self.b, self.a)

    def second_moment(self, q):
        return self._second * q

    def derivative_second_moment(self, q):
        xp = array_module(q)
        # Zero variance means u ≡ 0 and φ'(0) = a.
        return xp.where(q > 0, self._second, self.a * self.a)

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        theta, pi_minus_theta = correlation_angle(e, f)
        scale = xp.sqrt(qx * qy)
        near_zero = c >= 0.0  # θ ≤ π/2
        sin_theta = xp.sqrt(e * f)
        # J near θ = π: the two terms cancel to (π − θ)³/3; with φ = π − θ it is φ·(1 + ρ) − (φ − sin φ).
        j = xp.where(near_zero, sin_theta + pi_minus_theta * c,
                     pi_minus_theta * f - theta_minus_sin(pi_minus_theta))
        beta_term = 2.0 * self._beta2 / _PI
        even = 2.0 * j - _PI * c  # A(θ) ≥ 0
        # π − A(θ) = (1 − ρ)(π − 2θ) + 2(θ − sin θ) for θ ≤ π/2, and the same in π − θ, 1 + ρ beyond.
        pi_minus_even = xp.where(near_zero,
                                 e * (_PI - 2.0 * theta) + 2.0 * theta_minus_sin(theta),
                                 f * (_PI - 2.0 * pi_minus_theta) + 2.0 * theta_minus_sin(pi_minus_theta))
        return PairMoments(
            cov=scale * (self._ab * c + beta_term * j),
            dcov=self._ab + beta_term * pi_minus_theta,
            gap_parallel=scale * (self._alpha2 * e + (self._beta2 / _PI) * pi_minus_even),
            gap_antiparallel=scale * (self._alpha2 * f + (self._beta2 / _PI) * (_PI + even)),
        )


_ABRELU_NAMES = {(0.0, 1.0): "relu", (-1.0, 1.0): "abs"}


def ReLU() -> ABReLU:
    """max(x, 0)."""
    return ABReLU(0.0, 1.0)


def LeakyReLU(slope: float = 0.01) -> ABReLU:
    """x for x > 0, slope·x otherwise."""
    return ABReLU(float(slope), 1.0)


def Abs() -> ABReLU:
    """|x|."""
    return ABReLU(-1.0, 1.0)


class Erf(Activation):
    """φ(x) = erf(x); closed forms of Williams (1997).

    E[φ(u)φ(v)] = (2/π) arcsin(2Σ_uv / √((1 + 2q_x)(1 + 2q_y))),
    E[φ'(u)φ'(v)] = (4/π) det(I + 2Σ)^{-1/2}.
    """

    name = "erf"

    def __call__(self, x):
        if array_module(x).__name__ == "cupy":
            from cupyx.scipy.special import erf
        else:
            from scipy.special import erf
        return erf(x)

    def derivative(self, x):
        xp = array_module(x)
        return (2.0 / math.sqrt(_PI)) * xp.exp(-x * x)

    def second_moment(self, q):
        xp = array_module(q)
        return (2.0 / _PI) * xp.arcsin(2.0 * q / (1.0 + 2.0 * q))

    def derivative_second_moment(self, q):
        xp = array_module(q)
        return (4.0 / _PI) / xp.sqrt(1.0 + 4.0 * q)

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        ax = 1.0 + 2.0 * qx
        ay = 1.0 + 2.0 * qy
        cov = (2.0 / _PI) * xp.arcsin(2.0 * c * xp.sqrt(qx * qy) / xp.sqrt(ax * ay))
        # det(I + 2Σ) = 1 + 2q_x + 2q_y + 4 q_x q_y (1 − ρ²), with 1 − ρ² = (1 − ρ)(1 + ρ) free of cancellation.
        det = 1.0 + 2.0 * (qx + qy) + 4.0 * qx * qy * (e * f)
        root = xp.sqrt(self.second_moment(qx) * self.second_moment(qy))
        # erf's dual kernel is smooth in ρ: the plain differences lose no more than the rounding of their terms.
        return PairMoments(
            cov=cov,
            dcov=(4.0 / _PI) / xp.sqrt(det),
            gap_parallel=xp.maximum(root - cov, 0.0),
            gap_antiparallel=xp.maximum(root + cov, 0.0),
        )


def _smooth_gaps(xp, qx, qy, e, cov, second_x, second_y):
    """Cauchy–Schwarz gaps of an activation with a smooth dual kernel, by subtraction, clipped at 0.

    A pair of identical rows (e = 0, q_x = q_y) gets a parallel gap of exactly 0, so a point's correlation with
    itself stays exactly 1 in the next layer.
    """
    root = xp.sqrt(second_x * second_y)
    parallel = xp.where((e == 0.0) & (qx == qy), 0.0, xp.maximum(root - cov, 0.0))
    return parallel, xp.maximum(root + cov, 0.0)


class _SmoothClosedForm(Activation):
    """An activation whose pair expectations come from one closed-form ``_moments(qx, qy, c, e, f)`` returning
    (E[φ(u)φ(v)], E[φ'(u)φ'(v)]); the second moments are its values at ρ = 1 and the gaps are formed by
    subtraction (its dual kernel is smooth)."""

    @abc.abstractmethod
    def _moments(self, qx, qy, c, e, f):
        """(E[φ(u)φ(v)], E[φ'(u)φ'(v)]) over the correlated pair."""

    def second_moment(self, q):
        return self._moments(q, q, 1.0, 0.0, 2.0)[0]

    def derivative_second_moment(self, q):
        return self._moments(q, q, 1.0, 0.0, 2.0)[1]

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        cov, dcov = self._moments(qx, qy, c, e, f)
        parallel, antiparallel = _smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
        return PairMoments(cov, dcov, parallel, antiparallel)


def _erf(x):
    if array_module(x).__name__ == "cupy":
        from cupyx.scipy.special import erf
    else:
        from scipy.special import erf
    return erf(x)


class Gelu(_SmoothClosedForm):
    """φ(x) = x·Φ(x), the exact GELU (Φ the standard normal CDF; not the tanh approximation).

    With φ(x) = x/2 + x(Φ(x) − 1/2), the odd part contributes Σ/4 and the even part's kernel follows from Gaussian
    integration by parts. With Σ = ρ√(q_x q_y), P = (1 + q_x)(1 + q_y), δ² = P − Σ² = 1 + q_x + q_y + q_x q_y(1 − ρ²)
    (cancellation-free from 1 − ρ and 1 + ρ) and α = atan2(Σ, δ):

        E[φ(u)φ(v)]   = Σ/4 + [(Σ² + q_x q_y δ²)/(P δ) + Σ α] / (2π),
        E[φ'(u)φ'(v)] = ∂/∂Σ of the above = 1/4 + α/(2π) + Σ/(2π δ)·(1 + 1/δ² + (1 − q_x q_y)/P),

    the kernel neural-tangents' ``stax.Gelu`` uses (derived and checked here independently, see the tests).
    """

    name = "gelu"

    def __call__(self, x):
        return 0.5 * x * (1.0 + _erf(x * _INV_SQRT2))

    def derivative(self, x):
        xp = array_module(x)
        return 0.5 * (1.0 + _erf(x * _INV_SQRT2)) + x * xp.exp(-0.5 * x * x) * _INV_SQRT_2PI

    def _moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        product = qx * qy
        sigma = c * xp.sqrt(product)
        plus_one = (1.0 + qx) * (1.0 + qy)
        delta2 = 1.0 + qx + qy + product * (e * f)
        delta = xp.sqrt(delta2)
        angle = xp.arctan2(sigma, delta)
        cov = 0.25 * sigma + ((sigma * sigma + product * delta2) / (plus_one * delta) + sigma * angle) / _TWO_PI
        dcov = (0.25 + angle / _TWO_PI
                + sigma / (_TWO_PI * delta) * (1.0 + 1.0 / delta2 + (1.0 - product) / plus_one))
        return cov, dcov



class _Trigonometric(_SmoothClosedForm):
    """sin and cos: E[e^{i(u ± v)}] = exp(−Var(u ± v)/2) gives every expectation in closed form.

    With d∓ = Var(u ∓ v) = (√q_x − √q_y)² + 2√(q_x q_y)(1 ∓ ρ) (no cancellation) and Σ = ρ√(q_x q_y):

        E[sin u sin v] = (e^{−d₋/2} − e^{−d₊/2})/2 = sign(Σ)·e^{−min(d₋, d₊)/2}·(−expm1(−2|Σ|))/2,
        E[cos u cos v] = (e^{−d₋/2} + e^{−d₊/2})/2,

    the first written so that it keeps its relative accuracy for small Σ and never overflows (e^{−(q_x+q_y)/2}
    sinh Σ would for q ≳ 700).
    """

    @staticmethod
    def _sin_cos(qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        root_x, root_y = xp.sqrt(qx), xp.sqrt(qy)
        scale = root_x * root_y
        unequal = (root_x - root_y) ** 2
        minus = unequal + 2.0 * scale * e
        plus = unequal + 2.0 * scale * f
        sigma = c * scale
        sin_sin = xp.sign(sigma) * xp.exp(-0.5 * xp.minimum(minus, plus)) * (-0.5 * xp.expm1(-2.0 * xp.abs(sigma)))
        cos_cos = 0.5 * (xp.exp(-0.5 * minus) + xp.exp(-0.5 * plus))
        return sin_sin, cos_cos



class Sin(_Trigonometric):
    """φ(x) = sin x: E[φφ] = e^{−(q_x+q_y)/2} sinh Σ, E[φ'φ'] = e^{−(q_x+q_y)/2} cosh Σ."""

    name = "sin"

    def __call__(self, x):
        return array_module(x).sin(x)

    def derivative(self, x):
        return array_module(x).cos(x)

    def _moments(self, qx, qy, c, e, f):
        return self._sin_cos(qx, qy, c, e, f)


class Cos(_Trigonometric):
    """φ(x) = cos x: E[φφ] = e^{−(q_x+q_y)/2} cosh Σ, E[φ'φ'] = e^{−(q_x+q_y)/2} sinh Σ."""

    name = "cos"

    def __call__(self, x):
        return array_module(x).cos(x)

    def derivative(self, x):
        return -array_module(x).sin(x)

    def _moments(self, qx, qy, c, e, f):
        sin_sin, cos_cos = self._sin_cos(qx, qy, c, e, f)
        return cos_cos, sin_sin


class Identity(Activation):
    """φ(x) = x: the kernel stays linear, E[uv] = Σ, E[φ'φ'] = 1, gaps √(q_x q_y)·(1 ∓ ρ) exactly."""

    name = "identity"
    polynomial_degree = 1

    def __call__(self, x):
        return x

    def derivative(self, x):
        return array_module(x).ones_like(x)

    def second_moment(self, q):
        return q * 1.0

    def derivative_second_moment(self, q):
        return array_module(q).ones_like(q * 1.0)

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        scale = xp.sqrt(qx * qy)
        return PairMoments(scale * c, xp.ones_like(scale * c), scale * e, scale * f)


#: Highest degree `Polynomial` accepts (its Hermite coefficients use k! for k ≤ degree).
MAX_POLYNOMIAL_DEGREE = 64


class Polynomial(Activation):
    """φ(x) = c₀ + c₁x + … + c_p x^p, exactly: a finite Mehler sum with per-row coefficients.

    x^k = Σ_m k!/(n!·2^m·m!)·He_n(x) over n = k − 2m, so the normalised Hermite coefficients of z ↦ φ(√q z) are

        a_n(q) = Σ_m c_{n+2m} (n+2m)! / (√(n!)·2^m·m!) · q^{(n+2m)/2},

    and E[φ(u)φ(v)] = Σ_{n ≤ p} a_n(q_x) a_n(q_y) ρⁿ (the same for φ' with its coefficients). This is
    neural-tangents' ``stax.Polynomial``; it is also Daniely et al.'s dual of a polynomial.
    """

    name = "polynomial"

    def __init__(self, *coefficients):
        try:
            values = [float(v) for v in coefficients]
        except (TypeError, ValueError):
            raise ValueError(f"activation: polynomial coefficients must be numbers, got {coefficients!r}") from None
        while values and values[-1] == 0.0:
            values.pop()
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError("activation: polynomial needs finite coefficients c0, c1, …, not all zero, "
                             f"e.g. polynomial(0, 1, 0.5); got {coefficients!r}")
        if len(values) - 1 > MAX_POLYNOMIAL_DEGREE:
            raise ValueError(f"activation: polynomial degree {len(values) - 1} is above {MAX_POLYNOMIAL_DEGREE}")
        self.coefficients = tuple(values)
        self.polynomial_degree = len(values) - 1
        derivative = [k * v for k, v in enumerate(values)][1:]
        self._hermite = self._hermite_matrix(values)
        self._hermite_derivative = self._hermite_matrix(derivative)

    @staticmethod
    def _hermite_matrix(values):
        """H[n][k]: coefficient of (√q)^k in a_n(q); only k = n + 2m are non-zero."""
        size = len(values)
        matrix = [[0.0] * size for _ in range(size)]
        for n in range(size):
            for m in range((size - 1 - n) // 2 + 1):
                k = n + 2 * m
                matrix[n][k] = values[k] * (math.factorial(k) / (math.factorial(m) * 2.0 ** m)
                                             / math.sqrt(math.factorial(n)))
        return matrix

    def describe(self) -> str:
        return "polynomial(" + ", ".join(repr(v) for v in self.coefficients) + ")"

    def __repr__(self) -> str:
        return "Polynomial(" + ", ".join(repr(v) for v in self.coefficients) + ")"

    def __call__(self, x):
        out = x * 0.0 + self.coefficients[-1]
        for value in self.coefficients[-2::-1]:
            out = out * x + value
        return out

    def derivative(self, x):
        out = x * 0.0
        for k in range(len(self.coefficients) - 1, 0, -1):
            out = out * x + k * self.coefficients[k]
        return out

    @staticmethod
    def _rows(matrix, q):
        """[a_0(q), a_1(q), …] as arrays shaped like q (Horner in √q)."""
        xp = array_module(q)
        root = xp.sqrt(xp.maximum(q, 0.0))
        rows = []
        for line in matrix:
            value = root * 0.0 + line[-1]
            for coefficient in line[-2::-1]:
                value = value * root + coefficient
            rows.append(value)
        return rows

    @staticmethod
    def _series(rows_x, rows_y, c):
        total = rows_x[-1] * rows_y[-1] + c * 0.0
        for ax, ay in zip(rows_x[-2::-1], rows_y[-2::-1]):
            total = total * c + ax * ay
        return total

    def _moments(self, qx, qy, c):
        xp = array_module(qx, qy, c)
        qx, qy, c = xp.asarray(qx, dtype=xp.float64), xp.asarray(qy, dtype=xp.float64), xp.asarray(c, dtype=xp.float64)
        if len(self._hermite_derivative) == 0:
            dcov = (qx * qy * c) * 0.0
        else:
            dcov = self._series(self._rows(self._hermite_derivative, qx), self._rows(self._hermite_derivative, qy), c)
        return self._series(self._rows(self._hermite, qx), self._rows(self._hermite, qy), c), dcov

    def second_moment(self, q):
        return self._moments(q, q, 1.0)[0]

    def derivative_second_moment(self, q):
        return self._moments(q, q, 1.0)[1]

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        cov, dcov = self._moments(qx, qy, c)
        parallel, antiparallel = _smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
        return PairMoments(cov, dcov, parallel, antiparallel)


#: Default normwise relative accuracy of the Hermite-series activations.
DEFAULT_TOL = 1e-10


def _check_tol(tol, name):
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ValueError(f"activation: {name} tol must be a number, got {tol!r}") from None
    if not (1e-13 <= tol <= 1e-2):
        raise ValueError(f"activation: {name} tol must lie in [1e-13, 1e-2] (relative accuracy), got {tol!r}")
    return tol


class MehlerActivation(Activation):
    """An activation whose dual kernels come from the Mehler (Hermite) series, accurate to ``tol``.

    ``tol`` bounds the error of E[φφ] relative to √(E φ(u)² E φ(v)²) and of E[φ'φ'] relative to
    √(E φ'(u)² E φ'(v)²), at every correlation (see `ntkdist.kernels.hermite_dual`). Subclasses define φ, φ'.
    """

    polynomial_degree = None

    def __init__(self, tol: float = DEFAULT_TOL):
        self.tol = _check_tol(tol, self.name)

    @property
    def dual(self):
        """The `MehlerDual` that calibrates and evaluates the series (created on first use)."""
        dual = self.__dict__.get("_dual")
        if dual is None:
            dual = MehlerDual(self.__call__, self.derivative, self.tol, self.name)
            self.__dict__["_dual"] = dual
        return dual

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_dual", None)  # caches; rebuilt on first use
        return state

    def _tol_suffix(self):
        return "" if self.tol == DEFAULT_TOL else f"(tol={self.tol!r})"

    def describe(self) -> str:
        return self.name + self._tol_suffix()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tol={self.tol!r})"

    def second_moment(self, q):
        return self.dual.moments(q)[0]

    def derivative_second_moment(self, q):
        return self.dual.moments(q)[1]

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        cov, dcov = self.dual.pair(qx, qy, c)
        parallel, antiparallel = _smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
        return PairMoments(cov, dcov, parallel, antiparallel)


class Tanh(MehlerActivation):
    """φ(x) = tanh x (Mehler series; odd, so only odd a_n and even b_n are summed)."""

    name = "tanh"

    def __call__(self, x):
        return array_module(x).tanh(x)

    def derivative(self, x):
        xp = array_module(x)
        t = xp.exp(-2.0 * xp.abs(x))  # sech² x = 4t/(1 + t)², no overflow
        return 4.0 * t / ((1.0 + t) * (1.0 + t))


class Sigmoid(MehlerActivation):
    """φ(x) = 1/(1 + e^{−x}), the logistic function (Mehler series)."""

    name = "sigmoid"

    def __call__(self, x):
        xp = array_module(x)
        t = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + t), t / (1.0 + t))

    def derivative(self, x):
        xp = array_module(x)
        t = xp.exp(-xp.abs(x))
        return t / ((1.0 + t) * (1.0 + t))


class Softplus(MehlerActivation):
    """φ(x) = log(1 + e^x) (Mehler series)."""

    name = "softplus"

    def __call__(self, x):
        xp = array_module(x)
        return xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))

    def derivative(self, x):
        return Sigmoid.__call__(self, x)


_CUSTOM_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_CUSTOM_PREFIX = "custom:"
# Custom activations by name live in scopes (`ActivationScope`), never in a process-wide table.

# Central difference of order 8: f'(x) ≈ Σ_k c_k (f(x + kh) − f(x − kh)) / h.
_FD_WEIGHTS = ((1, 4.0 / 5.0), (2, -1.0 / 5.0), (3, 4.0 / 105.0), (4, -1.0 / 280.0))
_FD_STEP = 2.0 ** -6


class numerical_derivative:  # noqa: N801 - used like a function
    """φ' by an eighth-order central difference with step 2^-6·max(1, |x|).

    Truncation ≈ h⁸|φ⁽⁹⁾|/630 and rounding ≈ 1.5ε|φ|/h: about 1e-14 relative for functions whose derivatives
    stay O(1)–O(10³) on the unit scale. Used pointwise (`Custom.derivative`) and for the derivative coefficients
    at variances below 2^-10, where the Hermite identity would divide by √q. A class rather than a closure, so
    that it pickles whenever φ does.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        xp = array_module(x)
        h = _FD_STEP * xp.maximum(xp.abs(x), 1.0)
        total = 0.0
        for k, weight in _FD_WEIGHTS:
            total = total + weight * (self.fn(x + k * h) - self.fn(x - k * h))
        return total / h


class Custom(MehlerActivation):
    """Any elementwise φ (a Python callable), with the Mehler-series duals of `MehlerActivation`.

    Parameters
    ----------
    fn : callable
        φ; takes and returns arrays of the module it is given (NumPy ufuncs work on CuPy arrays too).
        φ must be absolutely continuous with E φ(√q Z)² < ∞.
    derivative : callable or None
        φ'. Without it, `derivative` is an eighth-order central difference (`numerical_derivative`); the
        kernels take the derivative's Hermite coefficients from b_n = √((n+1)/q)·a_{n+1}(φ) (exact, no
        differencing) at q > 2^-10 and from the numerical φ' only at smaller variances.
    name : str
        Lowercase identifier; the spec string is ``"custom:NAME"`` (``"custom:NAME(tol=…)"`` at a non-default
        tol), which `get_activation` resolves in the `ActivationScope` this activation was created in (or one
        given explicitly), never across scopes.
    tol : float
        Relative accuracy of the series (default 1e-10).
    polynomial_degree, non_polynomial :
        Declare φ a polynomial of that degree, or not a polynomial. Without either, theory results that depend
        on it (strict positive definiteness, Carvalho et al.) are reported as not guaranteed.
    register : bool
        Add it to the current `ActivationScope`, if one is entered (default True).
    """

    def __init__(self, fn, derivative=None, name=None, tol: float = DEFAULT_TOL, *, register: bool = True,
                 polynomial_degree: int | None = None, non_polynomial: bool = False):
        if not callable(fn):
            raise ValueError(f"activation: custom needs a callable fn, got {type(fn).__name__}")
        if derivative is not None and not callable(derivative):
            raise ValueError(f"activation: custom derivative must be callable or None, got {type(derivative).__name__}")
        if name is None:
            name = getattr(fn, "__name__", "")
        if not isinstance(name, str) or not _CUSTOM_NAME.match(name) or name in _REGISTRY:
            raise ValueError(
                f"activation: custom needs name= a lowercase identifier that is not a built-in activation "
                f"(e.g. name='swish'), got {name!r}"
            )
        self.name = name
        self.fn = fn
        self.given_derivative = derivative
        # Whether φ is a polynomial is the caller's knowledge, not something a series can certify.
        if polynomial_degree is not None and non_polynomial:
            raise ValueError("activation: custom takes polynomial_degree or non_polynomial=True, not both")
        self.polynomial_degree = None if polynomial_degree is None else int(polynomial_degree)
        self.polynomial_known = polynomial_degree is not None or bool(non_polynomial)
        self._derivative = derivative if derivative is not None else numerical_derivative(fn)
        super().__init__(tol)
        probe = np.linspace(-3.0, 3.0, 7)
        try:
            values = np.asarray(fn(probe), dtype=np.float64)
            slopes = np.asarray(self._derivative(probe), dtype=np.float64)
        except Exception as error:
            raise ValueError(f"activation: custom {name!r} failed on a NumPy array: {error}") from None
        if values.shape != probe.shape or slopes.shape != probe.shape:
            raise ValueError(f"activation: custom {name!r} must map an array to an array of the same shape")
        if not (np.isfinite(values).all() and np.isfinite(slopes).all()):
            raise ValueError(f"activation: custom {name!r} gave non-finite values on [-3, 3]")
        scope = current_scope() if register else None
        if scope is not None:
            scope.add(self)

    def with_tol(self, tol: float) -> "Custom":
        """The same φ at another accuracy (not registered separately), with what is known of it: whether it is a
        polynomial, and of which degree (the positivity verdict depends on it)."""
        return Custom(self.fn, self.given_derivative, self.name, tol, register=False,
                      polynomial_degree=self.polynomial_degree,
                      non_polynomial=self.polynomial_known and self.polynomial_degree is None)

    def describe(self) -> str:
        return _CUSTOM_PREFIX + self.name + self._tol_suffix()

    def __repr__(self) -> str:
        return f"Custom({self.fn!r}, name={self.name!r}, tol={self.tol!r})"

    def __call__(self, x):
        return self.fn(x)

    def derivative(self, x):
        return self._derivative(x)


_REGISTRY = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "abs": Abs,
    "abrelu": ABReLU,
    "erf": Erf,
    "gelu": Gelu,
    "tanh": Tanh,
    "sigmoid": Sigmoid,
    "softplus": Softplus,
    "sin": Sin,
    "cos": Cos,
    "identity": Identity,
    "polynomial": Polynomial,
}


def available_activations() -> list[str]:
    """Names accepted by `get_activation` (and by ``[network] activation`` in a config).

    Custom activations (`Custom`) are resolved as ``custom:NAME`` inside the `ActivationScope` that holds them.
    """
    return sorted(_REGISTRY)


def _parse_spec(spec: str):
    """'leaky_relu(0.1)' → ('leaky_relu', [0.1], {}); 'tanh(tol=1e-6)' → ('tanh', [], {'tol': 1e-6})."""
    text = spec.strip().lower()
    if "(" not in text:
        return text, [], {}
    if not text.endswith(")"):
        raise ValueError(f"activation: cannot parse {spec!r}; write name or name(arg, ...), e.g. leaky_relu(0.1)")
    name, _, inside = text[:-1].partition("(")
    args, kwargs = [], {}
    for piece in filter(None, (p.strip() for p in inside.split(","))):
        key, equals, value = piece.rpartition("=")
        key = key.strip()
        if equals and not key.isidentifier():
            raise ValueError(f"activation: cannot parse the argument {piece!r} of {spec!r}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"activation: argument {piece!r} of {spec!r} is not a number") from None
        if equals:
            kwargs[key] = number
        else:
            args.append(number)
    return name.strip(), args, kwargs


def get_activation(spec, scope: ActivationScope | None = None) -> Activation:
    """Resolve an activation from its spec string (``"relu"``, ``"leaky_relu(0.1)"``, ``"tanh(tol=1e-06)"``,
    ``"polynomial(0.0, 1.0, 0.5)"``, ``"custom:swish"``) or pass one through.

    ``"custom:NAME"`` is looked up in ``scope``, else in the current `ActivationScope` (the innermost ``with``).

    Raises
    ------
    ValueError
        For an unknown name or arguments the activation does not take; the message lists the known names.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation: expected a name or an Activation, got {type(spec).__name__}")
    name, args, kwargs = _parse_spec(spec)
    if name.startswith(_CUSTOM_PREFIX):
        scope = scope if scope is not None else current_scope()
        custom = None if scope is None else scope.get(name[len(_CUSTOM_PREFIX):])
        if custom is None:
            raise ValueError(
                f"activation: unknown custom activation {spec!r}; create it with "
                f"ntkdist.activations.custom(fn, name={name[len(_CUSTOM_PREFIX):]!r}) inside "
                "`with ntkdist.activations.ActivationScope():`, or pass that scope (activations=…) to the config"
            )
        if args or set(kwargs) - {"tol"}:
            raise ValueError(f"activation: {name} takes only tol=…, got {spec!r}")
        return custom.with_tol(kwargs["tol"]) if "tol" in kwargs and kwargs["tol"] != custom.tol else custom
    if name not in _REGISTRY:
        raise ValueError(f"activation: unknown activation {spec!r}; use one of {', '.join(available_activations())}")
    try:
        return _REGISTRY[name](*args, **kwargs)
    except TypeError:
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        raise ValueError(f"activation: {name} does not take the arguments ({shown}) given in {spec!r}") from None
