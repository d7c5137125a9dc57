"""Activations by name: the constructors a user calls, ``ntkdist.activations.leaky_relu(0.1)``.

Each returns an `ntkdist.kernels.Activation`, which `ntkdist.MLP(activation=...)` accepts as well as its spec
string (``act.describe()``, e.g. ``"leaky_relu(0.1)"``, ``"tanh(tol=1e-06)"``), the form configs and stored runs
use. Which kernels are exact and which are series:

=================================  =============================================================================
closed form (rounding-exact)       relu, leaky_relu, abs, abrelu, erf, gelu (exact x·Φ(x)), sin, cos, identity,
                                   polynomial
Mehler (Hermite) series, ``tol``   tanh, sigmoid, softplus, custom
=================================  =============================================================================

``tol`` (default 1e-10) bounds the error of E[φ(u)φ(v)] relative to √(E φ(u)² E φ(v)²) and of E[φ'(u)φ'(v)]
relative to √(E φ'(u)² E φ'(v)²) (`ntkdist.kernels.hermite_dual`). The series needs more terms as the
pre-activation variance q grows (tanh at tol = 1e-10: about 100 at q = 1, 900 at q = 10); past what 4096
quadrature nodes resolve (tanh: q ≈ 16; sigmoid ≈ 64) it raises a ValueError that suggests a larger tol.

Names shadow builtins here on purpose (``abs``): import the module, not its names.
"""

from __future__ import annotations

from .kernels.activation_scope import ActivationScope
from .kernels.activations import (ABReLU, Activation, Cos, Custom, DEFAULT_TOL, Erf, Gelu, Identity, Polynomial,
                                  Sigmoid, Sin, Softplus, Tanh, available_activations, get_activation,
                                  numerical_derivative)

__all__ = [
    "relu", "leaky_relu", "abs", "abrelu", "erf", "gelu", "tanh", "sigmoid", "softplus", "sin", "cos", "identity",
    "polynomial", "custom", "get_activation", "available_activations", "numerical_derivative", "Activation",
    "DEFAULT_TOL", "ActivationScope",
]


def relu() -> Activation:
    """max(x, 0)."""
    return ABReLU(0.0, 1.0)


def leaky_relu(slope: float = 0.01) -> Activation:
    """x for x > 0, ``slope``·x otherwise."""
    return ABReLU(float(slope), 1.0)


def abs() -> Activation:  # noqa: A001 - the activation's name
    """|x|."""
    return ABReLU(-1.0, 1.0)


def abrelu(a: float, b: float) -> Activation:
    """a·min(x, 0) + b·max(x, 0)."""
    return ABReLU(a, b)


def erf() -> Activation:
    """erf(x) (Williams 1997)."""
    return Erf()


def gelu() -> Activation:
    """x·Φ(x), the exact GELU."""
    return Gelu()


def tanh(tol: float = DEFAULT_TOL) -> Activation:
    """tanh x (Mehler series to relative accuracy ``tol``)."""
    return Tanh(tol)


def sigmoid(tol: float = DEFAULT_TOL) -> Activation:
    """The logistic function 1/(1 + e^{−x}) (Mehler series)."""
    return Sigmoid(tol)


def softplus(tol: float = DEFAULT_TOL) -> Activation:
    """log(1 + e^x) (Mehler series)."""
    return Softplus(tol)


def sin() -> Activation:
    """sin x."""
    return Sin()


def cos() -> Activation:
    """cos x."""
    return Cos()


def identity() -> Activation:
    """x: a deep linear network."""
    return Identity()


def polynomial(*coefficients: float) -> Activation:
    """c₀ + c₁x + … + c_p x^p, given as ``polynomial(c0, c1, ..., cp)`` (exact kernels)."""
    return Polynomial(*coefficients)


def custom(fn, derivative=None, name: str | None = None, tol: float = DEFAULT_TOL, *,
           polynomial_degree: int | None = None, non_polynomial: bool = False) -> Activation:
    """Any elementwise callable φ, with Mehler-series kernels.

    Parameters
    ----------
    fn : callable
        φ on arrays (NumPy, or CuPy where the Gram is computed on a GPU; NumPy ufuncs work on both).
    derivative : callable, optional
        φ'. Without it, φ' pointwise is an eighth-order central difference (`numerical_derivative`), and the
        kernels use the Hermite identity b_n(q) = √((n+1)/q)·a_{n+1}(q) (no differencing) at q > 2^-10.
    name : str, optional
        Lowercase identifier (default ``fn.__name__``; required for lambdas). Created inside ``with
        ActivationScope() as scope:``, it is added to that scope, where ``"custom:NAME"`` (in
        ``get_activation`` and in a config's ``[network] activation``) resolves to it; outside every scope it is
        usable as an object (``MLP(activation=act)``) but no spec string finds it. Configurations keep a copy of
        the scope they were made in, so two configurations never see each other's custom activations
        (`ntkdist.kernels.activation_scope`).
    tol : float
        Relative accuracy of the series.
    polynomial_degree, non_polynomial :
        Say whether φ is a polynomial (of that degree) or not; strict positive definiteness (Carvalho et al.)
        needs a non-polynomial φ, and is reported as not guaranteed for a callable that says neither.
    """
    return Custom(fn, derivative, name, tol, polynomial_degree=polynomial_degree, non_polynomial=non_polynomial)
