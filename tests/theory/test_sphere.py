"""Sphere eigenvalues (ntkdist.theory.sphere): Funk–Hecke weights, series vs quadrature, Gram matrices, decay."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.integrate import IntegrationWarning, quad
from scipy.special import gammaln

import ntkdist
from ntkdist.kernels import MLP
from ntkdist.theory import (
    decay_prediction,
    fit_power_law,
    funk_hecke_weights,
    harmonic_multiplicity,
    power_series,
    sphere_eigenvalues,
)
from ntkdist.theory.sphere import abs_moment, gegenbauer_normalized, singular_model_eigenvalues


def funk_hecke_by_quad(fn, dim, k):
    """E_t[f(t) P_k(t)] on S^{dim−1} by adaptive quadrature in the angle (independent of the code's weights)."""
    c = math.exp(gammaln(dim / 2) - 0.5 * math.log(math.pi) - gammaln((dim - 1) / 2))
    integrand = lambda th: c * fn(math.cos(th)) * gegenbauer_normalized(dim, k, math.cos(th))[k] * math.sin(th) ** (dim - 2)  # noqa: E731,E501
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)  # roundoff at the 1e-15 target is expected
        return quad(integrand, 0, math.pi, epsabs=1e-15, epsrel=1e-13, limit=400)[0]


# ------------------------------------------------------------------------------------------------ building blocks

@pytest.mark.parametrize("dim", [2, 3, 4, 5, 8])
def test_harmonic_multiplicity(dim):
    """N(dim, k) = (2k+d−1)/k·C(k+d−2, k−1) with d = dim − 1; Σ_{k≤K} N = polynomials of degree ≤ K on the sphere."""
    d = dim - 1
    for k in range(0, 30):
        n = harmonic_multiplicity(dim, k)
        if k == 0:
            assert n == 1
        else:
            assert n * k == (2 * k + d - 1) * math.comb(k + d - 2, k - 1)
        total = sum(harmonic_multiplicity(dim, j) for j in range(k + 1))
        assert total == math.comb(k + dim - 1, dim - 1) + math.comb(k + dim - 2, dim - 1)
    if dim == 3:
        assert [harmonic_multiplicity(3, k) for k in range(5)] == [1, 3, 5, 7, 9]


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_funk_hecke_weights(dim):
    """β_{p,k} = E[t^p P_k(t)] (Murray Thm 4.6 / Vol(S^d)); Σ_k N(dim, k) β_{p,k} = 1 (t^p at t = 1)."""
    B = funk_hecke_weights(dim, 12, 40)
    for p in (0, 1, 2, 5, 12, 17, 40):
        for k in range(13):
            want = funk_hecke_by_quad(lambda t: t ** p, dim, k)
            assert B[k, p] == pytest.approx(want, abs=1e-14)
    N = np.array([harmonic_multiplicity(dim, k) for k in range(41)])
    np.testing.assert_allclose(N @ funk_hecke_weights(dim, 40, 40), 1.0, rtol=1e-13)
    assert (B >= 0).all()
    np.testing.assert_allclose(abs_moment(dim, np.arange(0, 40, 2)), B[0, 0:40:2], rtol=1e-13)


@pytest.mark.parametrize("dim", [2, 3, 5])
@pytest.mark.parametrize("alpha", [0.5, 1.5, 2.5])
def test_singular_model_eigenvalues(dim, alpha):
    got = singular_model_eigenvalues(dim, 10, alpha)
    for k in range(11):
        assert got[k] == pytest.approx(funk_hecke_by_quad(lambda t: (1 - t) ** alpha, dim, k), abs=1e-13)


def test_erf_eigenvalues_resum_the_kernel():
    """Mercer on the sphere: Σ_k N(dim, k) μ_k P_k(t) = Θ(t) (checked where it converges fast: erf)."""
    net = MLP(2, "erf", weight_var=1.5, bias_var=0.1)
    dim = 4
    spectrum = sphere_eigenvalues(net, dim, 60)
    t = np.linspace(-1, 1, 9)
    resummed = (spectrum.multiplicity * spectrum.eigenvalue) @ gegenbauer_normalized(dim, 60, t)
    X = np.zeros((1, dim))
    X[0, 0] = 1
    Y = np.zeros((t.size, dim))
    Y[:, 0], Y[:, 1] = t, np.sqrt(1 - t * t)
    np.testing.assert_allclose(resummed, ntkdist.ntk(X, Y, net=net)[0], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------- series against quadrature

SPECS = [("relu", 2.0, 0.0), ("relu", 1.5, 0.2), ("leaky_relu(0.2)", 1.0, 0.1), ("abs", 1.0, 0.3),
         ("erf", 1.5, 0.1), ("tanh", 2.0, 0.05), ("gelu", 1.3, 0.2)]


@pytest.mark.parametrize("spec,w,b", SPECS)
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("dim", [3, 5])
def test_series_and_quadrature_agree(spec, w, b, depth, dim):
    """Theorem 4.6 on the power series vs Funk–Hecke quadrature of the closed-form kernel: agree to 1e-8 relative
    (to μ_k where μ_k > 1e-3·max μ, to 1e-3·max μ below) and each within its reported error bound."""
    net = MLP(depth, spec, weight_var=w, bias_var=b)
    for kind in ("ntk", "nngp"):
        series = sphere_eigenvalues(net, dim, 30, kind)
        quadrature = sphere_eigenvalues(net, dim, 30, kind, method="quadrature")
        top = float(np.max(np.abs(quadrature.eigenvalue)))
        scale = np.maximum(np.abs(quadrature.eigenvalue), 1e-3 * top)
        gap = np.abs(series.eigenvalue - quadrature.eigenvalue)
        assert (gap <= 1e-8 * scale).all(), (kind, (gap / scale).max())
        # the library's Mehler-series kernels (tanh) are accurate to their tol = 1e-10 only
        slack = 2e-10 * top if spec == "tanh" else 1e-14 * top
        assert (gap <= 2 * (series.error_bound + quadrature.error_bound) + slack).all()
        np.testing.assert_array_equal(series.multiplicity, [harmonic_multiplicity(dim, k) for k in range(31)])


def test_relu_one_layer_without_bias_has_vanishing_odd_frequencies():
    """Cor. 4.7(2) (the appendix has a typo: it is the *odd* k ≥ 3 that vanish)."""
    net = MLP(1, "relu", weight_var=2.0, bias_var=0.0)
    spectrum = sphere_eigenvalues(net, 3, 20)
    odd = spectrum.eigenvalue[3::2]
    assert np.abs(odd).max() < 1e-13 and spectrum.eigenvalue[1] > 0.1
    assert (spectrum.eigenvalue[0::2] > 1e-6).all()
    assert decay_prediction(net, 3).odd_vanish


def test_reference_numbers_of_section_1_7():
    """The two-layer ReLU NTK in Murray's convention (γ_w² = 1, σ_w² = 2, no bias) on S² has
    eigenvalues 0.5, 1/3 (×3), 0.0781 (×5), 0 (k = 3) for K = Θ/n, i.e. μ_k in the convention of docs/theory.md §1.3."""
    from ntkdist.theory import murray_power_series

    c = murray_power_series("relu", 1 << 16, layers=2, gamma_w2=1.0, gamma_b2=0.0, sigma_w2=2.0).coefficients
    mu = funk_hecke_weights(3, 3, c.size - 1) @ c  # tail ≤ T·E|t|^P ≈ 1e-8
    np.testing.assert_allclose(mu[:3], [0.5, 1 / 3, 0.0781], atol=1e-4)
    assert abs(mu[3]) < 1e-12


# ------------------------------------------------------------------------------------------- Gram matrices (slow)

def _uniform(n, dim, seed):
    X = np.random.default_rng(seed).standard_normal((n, dim))
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def sphere_points():
    return {3: _uniform(3000, 3, 20240), 5: _uniform(3000, 5, 20241)}


GRAM_NETS = [("relu", 1, 2.0, 0.0), ("relu", 2, 2.0, 0.1), ("relu", 3, 1.5, 0.2),
             ("erf", 1, 2.0, 0.0), ("erf", 2, 1.5, 0.1), ("erf", 3, 1.0, 0.2),
             ("tanh", 1, 1.5, 0.0), ("tanh", 2, 2.0, 0.3), ("tanh", 3, 1.2, 0.3)]


@pytest.mark.slow
@pytest.mark.parametrize("dim", [3, 5])
@pytest.mark.parametrize("spec,depth,w,b", GRAM_NETS)
def test_gram_spectrum_clusters_at_sphere_eigenvalues(sphere_points, dim, spec, depth, w, b):
    """Uniform points on S² and S⁴ (N = 3000 each): the top eigenvalues of Gram/N cluster at μ_k with
    multiplicity N(dim, k) — cluster means within 3% wherever μ_k > 1e-3·max μ (docs/theory.md §1.3 convention).

    Eigenvalues are matched in sorted order: the i-th largest of Gram/N with the i-th largest μ (with multiplicity).
    """
    X = sphere_points[dim]
    n = X.shape[0]
    net = MLP(depth, spec, weight_var=w, bias_var=b)
    gram = ntkdist.ntk(X, net=net)
    empirical = np.linalg.eigvalsh(gram)[::-1] / n
    spectrum = sphere_eigenvalues(net, dim, 30)
    values, degrees = spectrum.ranked()
    top = spectrum.eigenvalue.max()
    # degrees beyond 30 are below the smallest cluster checked (their μ_k < 1e-3·top by the decay)
    assert spectrum.eigenvalue[-1] < 1e-3 * top
    checked = 0
    for k in range(31):
        if spectrum.eigenvalue[k] <= 1e-3 * top:
            continue
        where = np.nonzero(degrees == k)[0]
        assert where.size == harmonic_multiplicity(dim, k)
        assert empirical[where].mean() == pytest.approx(spectrum.eigenvalue[k], rel=0.03), k
        checked += 1
    assert checked >= 1
    assert empirical.sum() == pytest.approx(np.trace(gram) / n, rel=1e-12)


# --------------------------------------------------------------------------------------------------- decay rates

@pytest.mark.parametrize("kind,depth,b", [("ntk", 1, 0.0), ("ntk", 1, 0.3), ("ntk", 3, 0.2),
                                          ("nngp", 1, 0.3), ("nngp", 2, 0.0)])
def test_relu_coefficient_decay_lemma_3_2(kind, depth, b):
    """Lemma 3.2(1): κ_p = Θ(p^{−3/2}) (NTK); the NNGP's arc-cosine kernel: Θ(p^{−5/2}); odd p vanish without bias
    at one hidden layer."""
    net = MLP(depth, "relu", weight_var=2.0, bias_var=b)
    prediction = decay_prediction(net, 3, kind)
    c = power_series(net, 1 << 14, dim=3, kind=kind).coefficients
    p = np.arange(c.size)
    for parity in (0, 1):
        sel = (p >= 2048) & (p % 2 == parity)
        if parity == 1 and prediction.odd_vanish:
            assert c[sel].max() < 1e-15
            continue
        exponent, _ = fit_power_law(p[sel], c[sel])
        assert exponent == pytest.approx(prediction.coefficient_rate, abs=0.01)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
@pytest.mark.parametrize("dim", [3, 5])
def test_relu_eigenvalue_decay_corollary_4_7(kind, dim):
    """Cor. 4.7(1): μ_k = Θ(k^{−d−2a+2}), d = dim − 1: k^{−dim} (NTK), k^{−dim−2} (NNGP); fitted with a 1/k correction."""
    net = MLP(2, "relu", weight_var=2.0, bias_var=0.1)
    prediction = decay_prediction(net, dim, kind)
    spectrum = sphere_eigenvalues(net, dim, 48, kind, tol=1e-16, max_order=1 << 16)
    k = np.arange(16, 49)
    design = np.vstack([np.log(k), np.ones(k.size), 1.0 / k]).T
    slope = np.linalg.lstsq(design, np.log(spectrum.eigenvalue[16:]), rcond=None)[0][0]
    assert -slope == pytest.approx(prediction.eigenvalue_rate, rel=0.02)


@pytest.mark.parametrize("depth,w,b", [(1, 1.0, 0.0), (2, 1.5, 0.1), (3, 2.0, 0.2)])
def test_erf_geometric_decay(depth, w, b):
    """erf: κ_p ≈ R^{−p} (R = radius of convergence); μ_k ≈ ϱ^{−k}, ϱ = R + √(R²−1), inside Cor. 4.7(4)'s
    bracket [1/(2R), 1/R]."""
    net = MLP(depth, "erf", weight_var=w, bias_var=b)
    prediction = decay_prediction(net, 3)
    c = power_series(net, 512, dim=3, method="composition").coefficients
    p = 501 if c[501] > 0 else 500
    assert math.sqrt(c[p + 2] / c[p]) == pytest.approx(prediction.coefficient_rate, rel=0.01)
    mu = funk_hecke_weights(3, 80, 512) @ c  # a positive sum: relative accuracy even where μ_k ~ 1e-40
    k = 77 if mu[77] > 0 else 76
    base = math.sqrt(mu[k + 2] / mu[k])
    low, high = prediction.eigenvalue_rate_bounds
    assert low <= base <= high
    assert base == pytest.approx(prediction.eigenvalue_rate, rel=0.03)


def test_tanh_stretched_exponential_decay():
    """Lemma 3.2(2): κ_{p,2} = O(e^{−π√(p−1)/2}) at unit variance (γ_w² = 1: stax w = d, b = 0); the fitted
    exponent is the sharp π (strip of analyticity), so the lemma holds with room; Cor. 4.7(3)'s eigenvalue bound
    O(k^{−d+1/2}e^{−(π/2)√k}) holds too."""
    net = MLP(1, "tanh", weight_var=3.0, bias_var=0.0)
    prediction = decay_prediction(net, 3)
    c = power_series(net, 400, dim=3).coefficients
    p = np.arange(c.size)
    sel = (p >= 30) & (p % 2 == 1)
    design = np.vstack([np.sqrt(p[sel]), np.log(p[sel]), np.ones(sel.sum())]).T
    a = -np.linalg.lstsq(design, np.log(c[sel]), rcond=None)[0][0]
    assert a == pytest.approx(prediction.sharp_coefficient_rate, rel=0.02)
    assert a > prediction.coefficient_rate
    envelope = np.log(c[sel]) + prediction.coefficient_rate * np.sqrt(p[sel] - 1)
    assert envelope[-1] < envelope[0]  # κ_p·e^{π√(p−1)/2} bounded (here: decreasing)
    mu = funk_hecke_weights(3, 100, 400) @ c
    k = np.arange(21, 101, 2)
    bound_shape = np.log(mu[k]) + (2 - 0.5) * np.log(k) + prediction.eigenvalue_rate * np.sqrt(k)
    assert bound_shape[-1] < bound_shape[0]


def test_polynomial_activation_has_finitely_many_eigenvalues():
    net = MLP(2, "polynomial(0.1, 1.0, 0.5)", weight_var=1.0, bias_var=0.1)
    prediction = decay_prediction(net, 4)
    assert prediction.regime == "finite" and prediction.eigenvalue_rate == 4
    spectrum = sphere_eigenvalues(net, 4, 8)
    assert np.abs(spectrum.eigenvalue[5:]).max() < 1e-14 and spectrum.eigenvalue[4] > 1e-6


def test_bad_arguments_name_the_field():
    net = MLP(1, "relu")
    with pytest.raises(ValueError, match="dim"):
        sphere_eigenvalues(net, 1, 5)
    with pytest.raises(ValueError, match="max_degree"):
        sphere_eigenvalues(net, 3, -1)
    with pytest.raises(ValueError, match="method"):
        sphere_eigenvalues(net, 3, 5, method="monte_carlo")
    with pytest.raises(ValueError, match="kind"):
        sphere_eigenvalues(net, 3, 5, kind="cntk")
    with pytest.raises(ValueError, match="dim"):
        harmonic_multiplicity(1, 2)
