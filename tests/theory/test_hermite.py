"""Hermite coefficients (ntkdist.theory.hermite) against closed forms, mpmath quadrature and their identities."""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from scipy.integrate import quad

from ntkdist.kernels import get_activation
from ntkdist.theory import dual_coefficients, hermite_coefficients
from ntkdist.theory.hermite import _quadrature_coefficients, is_exact


def _double_factorial(n: int) -> int:
    return 1 if n <= 0 else math.prod(range(n, 0, -2))


def _mp_coefficient(fn, k: int, variance: float, dps: int = 25) -> float:
    """μ_k(φ(√v ·)) by mpmath quadrature in `dps` digits over unit panels (kinks at integers are panel ends)."""
    with mp.workdps(dps):
        root = mp.sqrt(mp.mpf(variance))
        norm = 1 / mp.sqrt(mp.factorial(k) * 2 * mp.pi)

        def integrand(z):
            # He_k(z) = 2^{−k/2} H_k(z/√2)
            he = mp.hermite(k, z / mp.sqrt(2)) * mp.power(2, -mp.mpf(k) / 2)
            return fn(root * z) * he * mp.exp(-z * z / 2) * norm

        edges = [mp.mpf(x) / root for x in range(-int(14 * float(root)) - 2, int(14 * float(root)) + 3)]
        lo, hi = min(edges[0], -14), max(edges[-1], 14)
        return float(mp.quad(integrand, [lo] + [e for e in edges if lo < e < hi] + [hi]))


# ---------------------------------------------------------------------------------------------------- closed forms

def test_relu_matches_double_factorial_formula():
    """μ_0 = 1/√(2π), μ_1 = 1/2, μ_k = (−1)^{k/2−1}(k−3)!!/√(2π k!) (even k ≥ 2), 0 odd k ≥ 3."""
    mu = hermite_coefficients("relu", 80)
    for k in range(81):
        if k == 0:
            want = 1 / math.sqrt(2 * math.pi)
        elif k == 1:
            want = 0.5
        elif k % 2:
            want = 0.0
        else:
            want = (-1) ** (k // 2 - 1) * _double_factorial(k - 3) / math.sqrt(2 * math.pi * math.factorial(k))
        assert mu[k] == pytest.approx(want, rel=1e-13, abs=0.0 if want else 1e-300)


def test_step_matches_double_factorial_formula():
    """Step: μ_0 = 1/2, μ_k = (−1)^{(k−1)/2}(k−2)!!/√(2π k!) for odd k, 0 for even k ≥ 2."""
    mu = hermite_coefficients("step", 81)
    for k in range(82):
        if k == 0:
            want = 0.5
        elif k % 2 == 0:
            want = 0.0
        else:
            want = (-1) ** ((k - 1) // 2) * _double_factorial(k - 2) / math.sqrt(2 * math.pi * math.factorial(k))
        assert mu[k] == pytest.approx(want, rel=1e-13, abs=0.0 if want else 1e-300)


@pytest.mark.parametrize("spec", ["relu", "leaky_relu(0.1)", "abs", "abrelu(-0.3, 2.0)"])
@pytest.mark.parametrize("variance", [1.0, 0.37, 5.0])
def test_abrelu_homogeneity_and_decomposition(spec, variance):
    """φ = αx + β|x|: coefficients √v·(α δ_{k1} + β μ_k(|·|)); the |·| part is 2·ReLU − identity."""
    act = get_activation(spec)
    alpha, beta = 0.5 * (act.a + act.b), 0.5 * (act.b - act.a)
    relu = hermite_coefficients("relu", 60)
    abs_mu = 2.0 * relu
    abs_mu[1] -= 1.0
    want = math.sqrt(variance) * beta * abs_mu
    want[1] += math.sqrt(variance) * alpha
    np.testing.assert_allclose(hermite_coefficients(act, 60, variance=variance), want, rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("variance", [1.0, 0.2, 3.0])
def test_erf_squares_are_the_arcsin_taylor_series(variance):
    """Williams: E[erf(u)erf(v)] = (2/π)arcsin(s c), s = 2q/(1+2q), so μ_{2m+1}² = (2/π)(2m)!s^{2m+1}/(4^m (m!)²(2m+1))."""
    A = dual_coefficients("erf", 121, variance=variance)
    s = 2 * variance / (1 + 2 * variance)
    for k in range(122):
        if k % 2 == 0:
            assert A[k] == 0.0
            continue
        m = (k - 1) // 2
        log_want = (math.log(2 / math.pi) + math.lgamma(2 * m + 1) + k * math.log(s)
                    - m * math.log(4) - 2 * math.lgamma(m + 1) - math.log(2 * m + 1))
        assert A[k] == pytest.approx(math.exp(log_want), rel=1e-12)


def test_gaussian_activation_matches_davis_formula():
    """ω_σ(z) = (2πσ²)^{−1/2}e^{−z²/(2σ²)}: μ_p² = p!/(((p/2)!)² 2^p 2π (σ²+1)^{p+1}) for even p.

    The activation is a plain callable, so this exercises the numerical quadrature.
    """
    sigma2 = 0.6
    omega = lambda z: np.exp(-z * z / (2 * sigma2)) / math.sqrt(2 * math.pi * sigma2)  # noqa: E731
    mu = hermite_coefficients(omega, 200)
    for p in range(201):
        if p % 2:
            assert abs(mu[p]) < 1e-16
            continue
        log_want = (math.lgamma(p + 1) - 2 * math.lgamma(p / 2 + 1) - p * math.log(2) - math.log(2 * math.pi)
                    - (p + 1) * math.log(sigma2 + 1))
        assert abs(mu[p]) == pytest.approx(math.exp(0.5 * log_want), rel=1e-13, abs=1e-16)


@pytest.mark.parametrize("spec", ["relu", "abs", "leaky_relu(0.2)", "erf", "sin", "cos", "gelu", "identity",
                                  "polynomial(0.3, -1.0, 0.5, 0.25)"])
@pytest.mark.parametrize("variance", [1.0, 0.45, 2.5])
def test_exact_paths_agree_with_quadrature(spec, variance):
    """Every closed form against the generic quadrature path on the same φ, up to order 300."""
    act = get_activation(spec)
    assert is_exact(act)
    exact = hermite_coefficients(act, 300, variance=variance)
    numeric = _quadrature_coefficients(act, 300, variance)
    scale = math.sqrt(float(act.second_moment(variance)))
    np.testing.assert_allclose(exact, numeric, rtol=0, atol=2e-15 * max(scale, 1.0))
    if act.polynomial_degree is not None:
        assert not exact[act.polynomial_degree + 1:].any()


# ---------------------------------------------------------------------------------------------- numerical, mpmath

_MP_FUNCTIONS = {
    "tanh": mp.tanh,
    "sigmoid": lambda x: 1 / (1 + mp.exp(-x)),
    "softplus": lambda x: mp.log1p(mp.exp(x)),
    "erf": mp.erf,
    "relu": lambda x: x if x > 0 else mp.mpf(0),
}


@pytest.mark.parametrize("spec,variance", [("tanh", 1.0), ("tanh", 3.0), ("sigmoid", 0.7), ("softplus", 1.6),
                                           ("erf", 1.0), ("relu", 2.0)])
def test_numerical_coefficients_match_mpmath(spec, variance):
    """The quadrature path against independent 25-digit mpmath quadrature, orders up to 300.

    Absolute error ≤ 1e-15·√(E ψ²) uniformly in k (the docstring's claim; measured ≈ 1e-16).
    """
    act = get_activation(spec)
    fn = np.tanh if spec == "tanh" else act  # a plain callable forces the numerical path for relu/erf too
    numeric = _quadrature_coefficients(fn, 300, variance)
    scale = math.sqrt(float(act.second_moment(variance)))
    for k in (0, 1, 6, 64, 300):
        want = _mp_coefficient(_MP_FUNCTIONS[spec], k, variance)
        assert abs(numeric[k] - want) <= 1e-15 * scale, (k, numeric[k], want)


# ------------------------------------------------------------------------------------------------------ identities

_SCALAR = {
    "tanh": math.tanh,
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)) if x > -700 else 0.0,
    "softplus": lambda x: max(x, 0.0) + math.log1p(math.exp(-abs(x))),
    "erf": math.erf,
    "gelu": lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
    "sin": math.sin,
    "cos": math.cos,
}


def _independent_second_moment(spec, variance):
    """E φ(√v Z)² by adaptive scipy quadrature (independent of the activation's closed form)."""
    fn = _SCALAR[spec]
    f = lambda z: fn(math.sqrt(variance) * z) ** 2 * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    return sum(quad(f, a, b, epsabs=1e-15, epsrel=1e-14, limit=200)[0] for a, b in ((-40, 0), (0, 40)))


@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")
@pytest.mark.parametrize("spec,variance", [("tanh", 1.0), ("tanh", 4.0), ("sigmoid", 2.0), ("softplus", 0.5),
                                           ("erf", 0.8), ("gelu", 1.3), ("sin", 0.9), ("cos", 1.7)])
def test_parseval_smooth(spec, variance):
    """Σ μ_k² = E φ(√v Z)² for activations whose coefficients decay fast."""
    act = get_activation(spec)
    mu = hermite_coefficients(act, 1000, variance=variance)
    assert math.fsum(mu * mu) == pytest.approx(_independent_second_moment(spec, variance), rel=1e-13)


def test_parseval_relu_with_its_tail_rate():
    """ReLU: Σ_{k≤K} μ_k² → 1/2 with the tail Θ(K^{−3/2}) (μ_k² = Θ(k^{−5/2}))."""
    mu2 = hermite_coefficients("relu", 1 << 16) ** 2
    tails = [0.5 - math.fsum(mu2[: K + 1]) for K in (1 << 12, 1 << 14, 1 << 16)]
    assert all(t > 0 for t in tails)
    for small, big in zip(tails, tails[1:]):
        assert big / small == pytest.approx(4.0 ** -1.5, rel=2e-3)
    assert tails[-1] < 1e-7


@pytest.mark.parametrize("spec", ["relu", "leaky_relu(0.3)", "abs", "erf", "tanh", "sigmoid", "softplus", "gelu",
                                  "sin", "cos", "polynomial(1.0, 0.5, -0.2, 0.1)"])
@pytest.mark.parametrize("variance", [1.0, 0.3, 2.7])
def test_murray_derivative_relation(spec, variance):
    """μ_k(φ') = √(k+1) μ_{k+1}(φ) (Murray et al. Lemma, Assumption 3); at variance v: ψ' = √v φ'(√v ·)."""
    act = get_activation(spec)
    order = 200
    mu = hermite_coefficients(act, order + 1, variance=variance)
    derivative = hermite_coefficients(act, order, variance=variance, derivative=True)
    k = np.arange(order + 1)
    want = np.sqrt((k + 1) / variance) * mu[1:]
    scale = math.sqrt(float(act.derivative_second_moment(variance)))
    np.testing.assert_allclose(derivative, want, rtol=0, atol=5e-15 * max(scale, 1.0))


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="order"):
        hermite_coefficients("relu", -1)
    with pytest.raises(ValueError, match="variance"):
        hermite_coefficients("relu", 3, variance=0.0)
    with pytest.raises(ValueError, match="step"):
        hermite_coefficients("step", 3, derivative=True)
    with pytest.raises(TypeError, match="activation"):
        hermite_coefficients(3.0, 3)
