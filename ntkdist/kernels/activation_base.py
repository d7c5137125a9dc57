"""The interface every activation implements, and the pieces of arithmetic the activations share.


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
The activations themselves live in `ntkdist.kernels.closed_form_activations` (exact dual kernels) and
`ntkdist.kernels.series_activations` (Mehler series); `ntkdist.kernels.activations` is the public home of their
constructors and of the registry that resolves spec strings.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

from ._xp import array_module


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



def smooth_gaps(xp, qx, qy, e, cov, second_x, second_y):
    """Cauchy–Schwarz gaps of an activation with a smooth dual kernel, by subtraction, clipped at 0.

    A pair of identical rows (e = 0, q_x = q_y) gets a parallel gap of exactly 0, so a point's correlation with
    itself stays exactly 1 in the next layer.
    """
    root = xp.sqrt(second_x * second_y)
    parallel = xp.where((e == 0.0) & (qx == qy), 0.0, xp.maximum(root - cov, 0.0))
    return parallel, xp.maximum(root + cov, 0.0)
