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
from typing import NamedTuple

from ._xp import array_module

_PI = math.pi
_TWO_PI = 2.0 * math.pi


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
    so that no term cancels near θ = 0 or θ = π. φ'(0) := a (for ReLU 0, the convention of JAX).
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


_REGISTRY = {
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "abs": Abs,
    "abrelu": ABReLU,
    "erf": Erf,
}


def available_activations() -> list[str]:
    """Names accepted by `get_activation` (and by ``[network] activation`` in a config)."""
    return sorted(_REGISTRY)


def _parse_spec(spec: str):
    """'leaky_relu(0.1)' → ('leaky_relu', [0.1]); 'relu' → ('relu', [])."""
    text = spec.strip().lower()
    if "(" not in text:
        return text, []
    if not text.endswith(")"):
        raise ValueError(f"activation: cannot parse {spec!r}; write name or name(arg, ...), e.g. leaky_relu(0.1)")
    name, _, inside = text[:-1].partition("(")
    args = []
    for piece in filter(None, (p.strip() for p in inside.split(","))):
        try:
            args.append(float(piece))
        except ValueError:
            raise ValueError(f"activation: argument {piece!r} of {spec!r} is not a number") from None
    return name.strip(), args


def get_activation(spec) -> Activation:
    """Resolve an activation from its spec string (``"relu"``, ``"leaky_relu(0.1)"``) or pass one through.

    Raises
    ------
    ValueError
        For an unknown name or arguments the activation does not take; the message lists the known names.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation: expected a name or an Activation, got {type(spec).__name__}")
    name, args = _parse_spec(spec)
    if name not in _REGISTRY:
        raise ValueError(f"activation: unknown activation {spec!r}; use one of {', '.join(available_activations())}")
    try:
        return _REGISTRY[name](*args)
    except TypeError:
        raise ValueError(f"activation: {name} does not take the arguments {args} given in {spec!r}") from None
