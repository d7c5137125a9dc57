"""Activations without a closed-form dual kernel: tanh, sigmoid and softplus, by the Mehler (Hermite) series of
`ntkdist.kernels.hermite_dual` to a relative accuracy ``tol``.

`MehlerActivation` is also the base of `ntkdist.kernels.activations.Custom` (any elementwise callable).

The mathematics, with its conventions, errata and tests: docs/theory.md §2.6.
"""

from __future__ import annotations

from ..errors import ConfigError
from ._xp import array_module
from .activation_base import Activation, PairMoments, smooth_gaps
from .hermite_dual import MehlerDual

#: Default normwise relative accuracy of the Hermite-series activations.
DEFAULT_TOL = 1e-10


def _check_tol(tol, name):
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise ConfigError(f"activation: {name} tol must be a number, got {tol!r}") from None
    if not (1e-13 <= tol <= 1e-2):
        raise ConfigError(f"activation: {name} tol must lie in [1e-13, 1e-2] (relative accuracy), got {tol!r}")
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
        parallel, antiparallel = smooth_gaps(xp, qx, qy, e, cov, self.second_moment(qx), self.second_moment(qy))
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
