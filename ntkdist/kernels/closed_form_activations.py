"""Activations whose dual kernels have closed forms, exact to rounding: the ABReLU family (relu, leaky_relu,
abs, abrelu), erf, gelu, sin, cos, identity and polynomials.

Each class implements `ntkdist.kernels.activation_base.Activation`; build them through the constructors of
`ntkdist.kernels.activations` (``relu()``, ``leaky_relu(0.1)``, …) or their spec strings.

The mathematics, with its conventions, errata and tests: docs/theory.md §2.3.
"""

from __future__ import annotations

import abc
import math

from ._xp import array_module
from .activation_base import Activation, PairMoments, correlation_angle, smooth_gaps, theta_minus_sin

_PI = math.pi
_TWO_PI = 2.0 * math.pi
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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


class Erf(Activation):
    """φ(x) = erf(x); closed forms of Williams (1997).

    E[φ(u)φ(v)] = (2/π) arcsin(2Σ_uv / √((1 + 2q_x)(1 + 2q_y))),
    E[φ'(u)φ'(v)] = (4/π) det(I + 2Σ)^{-1/2},

    the arcsines evaluated as arctan2 of sine and cosine, both from quantities without cancellation.
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
        # arcsin(2q/(1 + 2q)) = arctan2(2q, √(1 + 4q)) (its cosine is √(1 + 4q)/(1 + 2q)): for large q the
        # arcsine's argument nears 1, where a rounding of it costs √q times more; arctan2 is well conditioned.
        xp = array_module(q)
        return (2.0 / _PI) * xp.arctan2(2.0 * q, xp.sqrt(1.0 + 4.0 * q))

    def derivative_second_moment(self, q):
        xp = array_module(q)
        return (4.0 / _PI) / xp.sqrt(1.0 + 4.0 * q)

    def pair_moments(self, qx, qy, c, e, f):
        xp = array_module(qx, qy, c, e, f)
        # det(I + 2Σ) = 1 + 2q_x + 2q_y + 4 q_x q_y (1 − ρ²), with 1 − ρ² = (1 − ρ)(1 + ρ) free of cancellation.
        det = 1.0 + 2.0 * (qx + qy) + 4.0 * qx * qy * (e * f)
        # arcsin(t), t = 2ρ√(q_x q_y)/√((1 + 2q_x)(1 + 2q_y)), as arctan2(2ρ√(q_x q_y), √det): 1 − t² is
        # det/((1 + 2q_x)(1 + 2q_y)), and arctan2 stays well conditioned where t nears ±1 (large q, ρ → ±1).
        cov = (2.0 / _PI) * xp.arctan2(2.0 * c * xp.sqrt(qx * qy), xp.sqrt(det))
        root = xp.sqrt(self.second_moment(qx) * self.second_moment(qy))
        # erf's dual kernel is smooth in ρ: the plain differences lose no more than the rounding of their terms.
        return PairMoments(
            cov=cov,
            dcov=(4.0 / _PI) / xp.sqrt(det),
            gap_parallel=xp.maximum(root - cov, 0.0),
            gap_antiparallel=xp.maximum(root + cov, 0.0),
        )

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
        parallel, antiparallel = smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
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
        parallel, antiparallel = smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
        return PairMoments(cov, dcov, parallel, antiparallel)
