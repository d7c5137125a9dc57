"""Activations: the constructors a user calls (``ntkdist.kernels.activations.leaky_relu(0.1)``, also reachable as
``ntkdist.activations``), the registry that resolves spec strings, and user-defined activations (`Custom`).

Each constructor returns an `Activation` (interface in `ntkdist.kernels.activation_base`), which
``MLP(activation=...)`` accepts as well as its spec string (``act.describe()``, e.g. ``"leaky_relu(0.1)"``,
``"tanh(tol=1e-06)"``), the form configs and stored runs use; constructors and spec strings share their names.
Which kernels are exact and which are series:

=================================  =============================================================================
closed form (rounding-exact)       relu, leaky_relu, abs, abrelu, erf, gelu (exact x·Φ(x)), sin, cos, identity,
                                   polynomial (classes in `ntkdist.kernels.closed_form_activations`)
Mehler (Hermite) series, ``tol``   tanh, sigmoid, softplus (`ntkdist.kernels.series_activations`), custom
=================================  =============================================================================

``tol`` (default 1e-10) bounds the error of E[φ(u)φ(v)] relative to √(E φ(u)² E φ(v)²) and of E[φ'(u)φ'(v)]
relative to √(E φ'(u)² E φ'(v)²) (`ntkdist.kernels.hermite_dual`). The series needs more terms as the
pre-activation variance q grows (tanh at tol = 1e-10: about 100 at q = 1, 900 at q = 10); past what 4096
quadrature nodes resolve (tanh: q ≈ 16; sigmoid ≈ 64) pairs take a graded conditional quadrature
(`ntkdist.kernels.kink_quadrature`), slower per pair but accurate at every variance: no refusal.

The classes (`ABReLU`, `Tanh`, …) are the types to test against (``isinstance(act, ABReLU)``); the lowercase
functions are the constructors. Names shadow builtins here on purpose (``abs``): import the module, not its names.
"""

from __future__ import annotations

import re

import numpy as np

from .activation_scope import ActivationScope, current_scope
from ._xp import array_module
from .activation_base import Activation, PairMoments, correlation_angle, smooth_gaps, theta_minus_sin
from .closed_form_activations import ABReLU, Cos, Erf, Gelu, Identity, MAX_POLYNOMIAL_DEGREE, Polynomial, Sin
from .series_activations import DEFAULT_TOL, MehlerActivation, Sigmoid, Softplus, Tanh

__all__ = [
    # constructors (the spelling of the spec strings)
    "relu", "leaky_relu", "abs", "abrelu", "erf", "gelu", "tanh", "sigmoid", "softplus", "sin", "cos", "identity",
    "polynomial", "custom",
    # the registry
    "ActivationScope", "current_scope", "get_activation", "available_activations", "numerical_derivative", "DEFAULT_TOL",
    # the types
    "Activation", "PairMoments", "ABReLU", "Erf", "Gelu", "Sin", "Cos", "Identity", "Polynomial", "MehlerActivation",
    "Tanh", "Sigmoid", "Softplus", "Custom", "MAX_POLYNOMIAL_DEGREE", "correlation_angle", "smooth_gaps",
    "theta_minus_sin",
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


def abrelu(a: float = 0.0, b: float = 1.0) -> Activation:
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
    "relu": relu,
    "leaky_relu": leaky_relu,
    "abs": abs,
    "abrelu": abrelu,
    "erf": erf,
    "gelu": gelu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "softplus": softplus,
    "sin": sin,
    "cos": cos,
    "identity": identity,
    "polynomial": polynomial,
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
        found = None if scope is None else scope.get(name[len(_CUSTOM_PREFIX):])
        if found is None:
            raise ValueError(
                f"activation: unknown custom activation {spec!r}; create it with "
                f"ntkdist.activations.custom(fn, name={name[len(_CUSTOM_PREFIX):]!r}) inside "
                "`with ntkdist.activations.ActivationScope():`, or pass that scope (activations=…) to the config"
            )
        if args or set(kwargs) - {"tol"}:
            raise ValueError(f"activation: {name} takes only tol=…, got {spec!r}")
        if "tol" in kwargs and kwargs["tol"] != found.tol:
            return found.with_tol(kwargs["tol"])
        return found
    if name not in _REGISTRY:
        raise ValueError(f"activation: unknown activation {spec!r}; use one of {', '.join(available_activations())}")
    try:
        return _REGISTRY[name](*args, **kwargs)
    except TypeError:
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        raise ValueError(f"activation: {name} does not take the arguments ({shown}) given in {spec!r}") from None
